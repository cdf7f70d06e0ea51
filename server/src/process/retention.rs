//! The server-wide budget for retained output (`--max-retained-bytes`, docs/protocol.md §1):
//! every process's retained chunks count against one total, and when it is exceeded
//! the oldest output of the largest retainer is dropped, which its readers see through
//! `firstRetainedSeq` like any other retention loss. A process counts until it is
//! released (its entry is gone) or dropped, whichever comes first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};

use super::Process;

/// Identifies a process within its pool.
pub(super) type MemberKey = u64;

pub struct RetentionPool {
    max_bytes: usize,
    retained_bytes: AtomicUsize,
    members: Mutex<HashMap<MemberKey, Weak<Process>>>,
    next_key: AtomicU64,
    /// Held while one task trims the pool, so concurrent producers do not all trim.
    trimming: Mutex<()>,
}

impl RetentionPool {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            max_bytes,
            retained_bytes: AtomicUsize::new(0),
            members: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            trimming: Mutex::new(()),
        })
    }

    /// Bytes retained by every member together.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes.load(Ordering::SeqCst)
    }

    fn members(&self) -> MutexGuard<'_, HashMap<MemberKey, Weak<Process>>> {
        self.members
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn next_key(&self) -> MemberKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn join(&self, key: MemberKey, process: &Arc<Process>) {
        self.members().insert(key, Arc::downgrade(process));
    }

    /// A member is gone; what it retained is freed with it.
    pub(super) fn leave(&self, key: MemberKey, retained: usize) {
        self.members().remove(&key);
        self.release(retained);
    }

    pub(super) fn reserve(&self, bytes: usize) {
        self.retained_bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    pub(super) fn release(&self, bytes: usize) {
        self.retained_bytes.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Drops the oldest output of the largest retainers until the total is back under
    /// the low-water mark, an eighth below the budget, so that the scan of every member
    /// this takes happens once per eighth of the budget, not once per chunk. Called by a
    /// producer after it added output; one producer trims at a time, and one that finds
    /// another trimming leaves it to that one, which checks again after it let go.
    pub(super) fn trim(&self) {
        while self.retained_bytes() > self.max_bytes {
            let _trimming = match self.trimming.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            let low_water = self.max_bytes - self.max_bytes / 8;
            while self.retained_bytes() > low_water {
                // Upgraded outside the members lock: dropping the last `Arc` of a
                // process calls `leave`, which takes that lock.
                let live: Vec<Weak<Process>> = self.members().values().cloned().collect();
                let largest = live
                    .iter()
                    .filter_map(Weak::upgrade)
                    .max_by_key(|process| process.retained_bytes());
                let Some(largest) = largest else {
                    return;
                };
                let excess = self.retained_bytes().saturating_sub(low_water);
                if largest.drop_oldest_output(excess) == 0 {
                    return;
                }
            }
        }
    }
}
