//! Turns for the tests of one binary. Each crate's integration tests are one binary
//! (`tests/it/main.rs`), so its tests run at the same time, two at once on the 2-core
//! test machine (libtest's default: one thread per core). Most don't mind: each has
//! its own database and topic. A few must not overlap with any other test: they stop,
//! SIGKILL or restart a service every test uses (ClickHouse, a Kafka broker,
//! ZooKeeper, a cluster node), measure something process-wide (the heap), or load
//! the machine for minutes so that a neighbour's time bounds would not hold.
//!
//! Contract: every integration test takes a turn as its first statement and holds it
//! to its end, [`exclusive`] for those few, [`shared`] for all others:
//!
//! ```ignore
//! let _turn = serial::shared();
//! ```
//!
//! Any number of shared turns run together; an exclusive turn waits until none is
//! held and holds off every other turn until it ends. A waiting exclusive turn goes
//! before shared turns asked for after it, so exclusive tests are not starved. Take
//! one turn per test, before anything else: a test that asked for a second turn
//! while an exclusive one waits would wait for itself. A test that panics gives its
//! turn back as it unwinds (the guard's drop), so a failure never blocks or fails
//! the tests after it. `docs/testing.md` lists the exclusive tests and why.
//!
//! The turn blocks the calling thread, which is what a test's first statement wants
//! (an async test's body runs on its own thread, in `block_on`, before it has spawned
//! anything). The guard is `Send`, so a test may hold it across `.await`s.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Who holds the turns now, and who waits for an exclusive one.
struct Turns {
    shared: usize,
    exclusive: bool,
    exclusive_waiting: usize,
}

struct Lock {
    turns: Mutex<Turns>,
    changed: Condvar,
}

static LOCK: Lock = Lock {
    turns: Mutex::new(Turns {
        shared: 0,
        exclusive: false,
        exclusive_waiting: 0,
    }),
    changed: Condvar::new(),
};

impl Lock {
    /// The state. Never held while a test runs, only while a turn is taken or given
    /// back; a panic there (there is none to expect) would leave it consistent, so a
    /// poisoned mutex is used as is.
    fn turns(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, turns: MutexGuard<'a, Turns>) -> MutexGuard<'a, Turns> {
        self.changed
            .wait(turns)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A test's turn: given back when dropped.
#[must_use = "the turn ends when this guard is dropped: bind it (`let _turn = ...`)"]
#[derive(Debug)]
pub struct Turn {
    exclusive: bool,
}

/// A turn beside other shared turns, while no exclusive one is held or waiting.
pub fn shared() -> Turn {
    let mut turns = LOCK.turns();
    while turns.exclusive || turns.exclusive_waiting > 0 {
        turns = LOCK.wait(turns);
    }
    turns.shared += 1;
    Turn { exclusive: false }
}

/// The only turn: waits until no other turn is held, and holds off every other test
/// until dropped.
pub fn exclusive() -> Turn {
    let mut turns = LOCK.turns();
    turns.exclusive_waiting += 1;
    while turns.exclusive || turns.shared > 0 {
        turns = LOCK.wait(turns);
    }
    turns.exclusive_waiting -= 1;
    turns.exclusive = true;
    Turn { exclusive: true }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = LOCK.turns();
        if self.exclusive {
            turns.exclusive = false;
        } else {
            turns.shared -= 1;
        }
        drop(turns);
        LOCK.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Shared turns overlap, an exclusive one overlaps with nothing, and a panicking
    /// holder gives its turn back. (One test: the lock is process-wide.)
    #[test]
    fn shared_turns_overlap_and_an_exclusive_turn_runs_alone() {
        let first = shared();
        let second = shared();
        assert_eq!(LOCK.turns().shared, 2);
        drop((first, second));

        // Each thread counts the holders while it holds its turn; an exclusive holder
        // must never see another, nor be seen by one.
        let holders = Arc::new(AtomicUsize::new(0));
        let exclusive_holders = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..12)
            .map(|n| {
                let holders = Arc::clone(&holders);
                let exclusive_holders = Arc::clone(&exclusive_holders);
                std::thread::spawn(move || {
                    let exclusive_turn = n % 4 == 0;
                    let _turn = if exclusive_turn {
                        exclusive()
                    } else {
                        shared()
                    };
                    holders.fetch_add(1, Ordering::SeqCst);
                    if exclusive_turn {
                        exclusive_holders.fetch_add(1, Ordering::SeqCst);
                    }
                    for _ in 0..10 {
                        let (all, exclusive) = (
                            holders.load(Ordering::SeqCst),
                            exclusive_holders.load(Ordering::SeqCst),
                        );
                        assert!(
                            exclusive == 0 || all == 1,
                            "{all} turns beside an exclusive one"
                        );
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    if exclusive_turn {
                        exclusive_holders.fetch_sub(1, Ordering::SeqCst);
                    }
                    holders.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no turn beside an exclusive one");
        }

        let panicked = std::thread::spawn(|| {
            let _turn = exclusive();
            panic!("a failing exclusive test");
        })
        .join();
        assert!(panicked.is_err());
        drop(exclusive());
        drop(shared());
    }
}
