//! The event stream behind WatchEvents: one tailer per process reads newly committed events
//! from the outbox once and fans them out to every watcher, who filter in memory.
//!
//! A watcher subscribes to the fan-out before it reads its backlog from the store, then skips
//! live events it already sent (ids at or below its cursor). Because ids are committed in order
//! (see `store::events`), every event after the cursor is either in the backlog or still to come
//! live, and none is sent twice. A watcher too slow for the fan-out buffer falls back to the
//! store and catches up from its cursor; it never loses events, it only reads them again.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
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
    /// Events queued for one stream whose client is not reading (default 256). When it is full
    /// the stream ends with RESOURCE_EXHAUSTED and the last cursor it delivered, to resume from.
    pub stream_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_streams_per_key: 32,
            max_streams_per_connection: 16,
            stream_buffer: 256,
        }
    }
}

impl EventsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_streams_per_key == 0
            || self.max_streams_per_connection == 0
            || self.stream_buffer < 2
        {
            return Err("events.max_streams_per_key and events.max_streams_per_connection must be at least 1, events.stream_buffer at least 2".into());
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
    /// the receiver goes away or the store fails.
    pub async fn watch(
        &self,
        filter: EventFilter,
        after: Option<i64>,
        out: mpsc::Sender<Result<Arc<EventRow>, crate::store::StoreError>>,
    ) {
        let mut live = self.live.subscribe();
        let mut cursor = match after {
            Some(c) => c,
            None => match self.store.last_event_id().await {
                Ok(last) => last,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
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
                        return;
                    }
                };
                let full = page.len() == PAGE as usize;
                for e in page {
                    cursor = e.id;
                    if out.send(Ok(Arc::new(e))).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            // Live, until the fan-out leaves this watcher behind.
            loop {
                match live.recv().await {
                    Ok(e) => {
                        if e.id <= cursor || !filter.matches(&e) {
                            continue;
                        }
                        cursor = e.id;
                        if out.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        live = live.resubscribe();
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}
