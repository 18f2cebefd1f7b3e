//! Per-card mutual exclusion inside one process. Striped: a fixed set of mutexes indexed by the
//! ICCID's hash, so memory stays bounded however many cards pass through and no cleanup is needed.
//! Two cards sharing a stripe only wait for each other briefly; one card never runs two
//! operations at once.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 1024;

pub struct CardLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for CardLocks {
    fn default() -> Self {
        CardLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl CardLocks {
    pub async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() % STRIPES as u64) as usize;
        self.stripes[i].lock().await
    }
}
