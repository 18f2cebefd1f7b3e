//! The event stream behind WatchEvents: one tailer per process reads newly committed events
//! from the outbox once and fans them out to every watcher, who filter in memory.
//!
//! A watcher subscribes to the fan-out before it reads its backlog from the store, then skips
//! live events it already sent (ids at or below its cursor). Because ids are committed in order
//! (see `store::events`), every event after the cursor is either in the backlog or still to come
//! live, and none is sent twice. A watcher too slow for the fan-out buffer falls back to the
//! store and catches up from its cursor; it never loses events, it only reads them again.
//!
//! Each watcher's outbound queue is bounded: a client that stops reading (its queue stays full
//! for `stall_ms`) is ended with [`Watched::Behind`] and the cursor of the last event queued,
//! instead of holding memory for it; it resumes from that cursor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tracing::warn;

use crate::store::{EventFilter, EventRow, Store};

/// `[events]`: what one client may hold open on WatchEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Open WatchEvents streams one API key may have in this process (default 32).
    pub max_streams_per_key: usize,
    /// Open WatchEvents streams one connection may have (default 16).
    pub max_streams_per_connection: usize,
    /// Events queued for one stream (default 256) ...
    pub stream_buffer: usize,
    /// ... and how long, in milliseconds, the queue may stay full (the client not reading)
    /// before the stream ends with RESOURCE_EXHAUSTED and the cursor of the last event it
    /// delivered, to resume from (default 5000).
    pub stall_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_streams_per_key: 32,
            max_streams_per_connection: 16,
            stream_buffer: 256,
            stall_ms: 5000,
        }
    }
}

impl EventsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_streams_per_key == 0
            || self.max_streams_per_connection == 0
            || self.stream_buffer < 2
            || self.stall_ms == 0
        {
            return Err("events.max_streams_per_key and events.max_streams_per_connection must be at least 1, events.stream_buffer at least 2 and events.stall_ms at least 1".into());
        }
        Ok(())
    }
}

/// Live events buffered per watcher before it counts as lagging.
const FANOUT_BUFFER: usize = 8192;
/// Events read per store query (backlog and tail).
const PAGE: u32 = 1000;
/// How often the tailer looks for events written by other processes.
const POLL: Duration = Duration::from_millis(250);
/// While nobody watches, how often the tail skips ahead to the newest event.
const IDLE_SKIP: Duration = Duration::from_secs(1);

/// The open WatchEvents streams of this process, by API key and by connection.
#[derive(Clone, Default)]
pub struct StreamSlots(Arc<Mutex<SlotCounts>>);

#[derive(Default)]
struct SlotCounts {
    by_key: HashMap<String, usize>,
    by_connection: HashMap<SocketAddr, usize>,
}

/// Which cap a new stream is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    Key(usize),
    Connection(usize),
}

/// One open stream's place under the caps; given back when dropped (the stream ended or its
/// client went away).
pub struct StreamSlot {
    slots: StreamSlots,
    key: String,
    connection: Option<SocketAddr>,
}

impl StreamSlots {
    /// Takes a place for a stream of `key` on `connection` (None: not known, only the key cap
    /// applies), or says which cap it is over.
    pub fn acquire(
        &self,
        cfg: &EventsConfig,
        key: &str,
        connection: Option<SocketAddr>,
    ) -> Result<StreamSlot, OverCap> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.by_key.get(key).copied().unwrap_or(0) >= cfg.max_streams_per_key {
            return Err(OverCap::Key(cfg.max_streams_per_key));
        }
        if let Some(conn) = connection {
            if c.by_connection.get(&conn).copied().unwrap_or(0) >= cfg.max_streams_per_connection {
                return Err(OverCap::Connection(cfg.max_streams_per_connection));
            }
            *c.by_connection.entry(conn).or_default() += 1;
        }
        *c.by_key.entry(key.to_string()).or_default() += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            key: key.to_string(),
            connection,
        })
    }

    /// Open streams of `key`.
    pub fn open_for_key(&self, key: &str) -> usize {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.by_key.get(key).copied().unwrap_or(0)
    }
}

fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = map.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(k);
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut c = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        give_back(&mut c.by_key, &self.key);
        if let Some(conn) = &self.connection {
            give_back(&mut c.by_connection, conn);
        }
    }
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The client went away, the store failed (sent on the stream) or the hub closed.
    Over,
    /// The client stopped reading: its queue stayed full for `stall`. `cursor` is the last
    /// event queued (or where the watch started): everything after it is still to be read.
    Behind { cursor: i64 },
}

enum Queued {
    Yes,
    Gone,
    Stalled,
}

/// Queues `item` for a watcher, waiting at most `stall` for room.
async fn queue<T>(out: &mpsc::Sender<T>, item: T, stall: Duration) -> Queued {
    match tokio::time::timeout(stall, out.send(item)).await {
        Ok(Ok(())) => Queued::Yes,
        Ok(Err(_)) => Queued::Gone,
        Err(_) => Queued::Stalled,
    }
}

#[derive(Clone)]
pub struct EventHub {
    store: Store,
    live: broadcast::Sender<Arc<EventRow>>,
    /// The newest event id the tailer has fanned out.
    tail: Arc<AtomicI64>,
    /// When the tail last skipped ahead with nobody listening.
    skipped_at: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
}

impl EventHub {
    /// Starts at the newest event: watchers arriving later read older events from the store.
    pub async fn new(store: Store) -> Result<EventHub, crate::store::StoreError> {
        let last = store.last_event_id().await?;
        Ok(EventHub {
            store,
            live: broadcast::channel(FANOUT_BUFFER).0,
            tail: Arc::new(AtomicI64::new(last)),
            skipped_at: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// Tails the outbox until `shutdown` turns true: wakes on every local commit with events and
    /// every `POLL` for the others.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut writes = self.store.event_writes();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.fan_out().await {
                warn!(error = %e, "event tailer could not read the outbox; retrying");
            }
            tokio::select! {
                _ = writes.changed() => {}
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn fan_out(&self) -> Result<(), crate::store::StoreError> {
        let mut tail = self.tail.load(Ordering::Acquire);
        if self.live.receiver_count() == 0 {
            // Nobody listens: skip ahead, at most once per IDLE_SKIP rather than after every
            // commit (a stale tail is safe: watchers drop what they already have). The newest id
            // is read before looking for listeners again, so a watcher that subscribes after
            // that look reads a backlog reaching at least this far, and one that subscribed
            // before it gets everything after `tail` live.
            let mut skipped = self.skipped_at.lock().await;
            if skipped.is_some_and(|at| at.elapsed() < IDLE_SKIP) {
                return Ok(());
            }
            let last = self.store.last_event_id().await?;
            if self.live.receiver_count() == 0 {
                self.tail.store(last, Ordering::Release);
                *skipped = Some(std::time::Instant::now());
                return Ok(());
            }
        }
        loop {
            let events = self
                .store
                .events_after(&EventFilter::default(), tail, PAGE)
                .await?;
            let full = events.len() == PAGE as usize;
            for e in events {
                tail = e.id;
                // An error means nobody listens right now; they catch up from the store.
                let _ = self.live.send(Arc::new(e));
            }
            self.tail.store(tail, Ordering::Release);
            if !full {
                return Ok(());
            }
        }
    }

    /// Streams the events matching `filter` after `after` (None: from now on) into `out`, until
    /// the receiver goes away, the store fails, or the receiver leaves `out` full for `stall`.
    pub async fn watch(
        &self,
        filter: EventFilter,
        after: Option<i64>,
        out: mpsc::Sender<Result<Arc<EventRow>, crate::store::StoreError>>,
        stall: Duration,
    ) -> WatchEnd {
        let mut live = self.live.subscribe();
        let mut cursor = match after {
            Some(c) => c,
            None => match self.store.last_event_id().await {
                Ok(last) => last,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return WatchEnd::Over;
                }
            },
        };
        loop {
            // Backlog: everything after the cursor that is already committed.
            loop {
                let page = match self.store.events_after(&filter, cursor, PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = out.send(Err(e)).await;
                        return WatchEnd::Over;
                    }
                };
                let full = page.len() == PAGE as usize;
                for e in page {
                    let id = e.id;
                    match queue(&out, Ok(Arc::new(e)), stall).await {
                        Queued::Yes => cursor = id,
                        Queued::Gone => return WatchEnd::Over,
                        Queued::Stalled => return WatchEnd::Behind { cursor },
                    }
                }
                if !full {
                    break;
                }
            }
            // Live, until the fan-out leaves this watcher behind.
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    // A client gone while nothing happens must not hold its task until the
                    // next event.
                    () = out.closed() => return WatchEnd::Over,
                };
                match received {
                    Ok(e) => {
                        if e.id <= cursor || !filter.matches(&e) {
                            continue;
                        }
                        let id = e.id;
                        match queue(&out, Ok(e), stall).await {
                            Queued::Yes => cursor = id,
                            Queued::Gone => return WatchEnd::Over,
                            Queued::Stalled => return WatchEnd::Behind { cursor },
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        live = live.resubscribe();
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return WatchEnd::Over,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_slots_cap_per_key_and_per_connection_and_are_given_back_on_drop() {
        let cfg = EventsConfig {
            max_streams_per_key: 2,
            max_streams_per_connection: 3,
            ..EventsConfig::default()
        };
        let slots = StreamSlots::default();
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let k1 = slots.acquire(&cfg, "k1", Some(a)).unwrap();
        let _k1b = slots.acquire(&cfg, "k1", Some(b)).unwrap();
        assert_eq!(
            slots.acquire(&cfg, "k1", Some(b)).err(),
            Some(OverCap::Key(2))
        );
        let _k2 = slots.acquire(&cfg, "k2", Some(a)).unwrap();
        let _k3 = slots.acquire(&cfg, "k3", Some(a)).unwrap();
        assert_eq!(
            slots.acquire(&cfg, "k4", Some(a)).err(),
            Some(OverCap::Connection(3))
        );
        drop(k1);
        assert_eq!(slots.open_for_key("k1"), 1);
        assert!(slots.acquire(&cfg, "k4", Some(a)).is_ok());
    }
}
