//! Anti-replay for sealed gossip: a sliding window over each sender's packet counter, as in
//! IPsec (RFC 4303 §3.4.3) with the bitmap of RFC 6479 simplified to a single 64-bit word.
//!
//! For each sender the window remembers the highest counter accepted and which of the 63
//! counters below it were accepted. A counter above the highest is new and slides the window;
//! one inside the window is accepted once; one below the window is too old to tell and is
//! refused. UDP may reorder gossip, so reordering within 64 packets is tolerated.
//!
//! The window only moves for packets that authenticated (the caller checks first, updates
//! after decryption), so forged packets cannot push a sender's window forward. The number of
//! senders tracked is bounded; past it, the sender heard from least recently is forgotten, and
//! a captured packet of that sender could then be replayed once.

use std::collections::HashMap;

/// Width of the window: how far behind the highest counter a packet may still arrive.
pub const REPLAY_WINDOW: u64 = 64;

/// Default bound on the number of senders tracked.
pub const DEFAULT_MAX_SENDERS: usize = 4096;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayKind {
    /// The counter was already accepted.
    Duplicate,
    /// The counter is [`REPLAY_WINDOW`] or more below the highest accepted one.
    TooOld,
}

/// One sender's window.
#[derive(Debug, Clone, Copy)]
struct CounterWindow {
    /// Highest counter accepted.
    highest: u64,
    /// Bit `i` is set when `highest - i` was accepted; bit 0 is `highest` itself.
    seen: u64,
}

impl CounterWindow {
    fn starting_at(counter: u64) -> Self {
        CounterWindow {
            highest: counter,
            seen: 1,
        }
    }

    fn check(&self, counter: u64) -> Result<(), ReplayKind> {
        if counter > self.highest {
            return Ok(());
        }
        let behind = self.highest - counter;
        if behind >= REPLAY_WINDOW {
            Err(ReplayKind::TooOld)
        } else if self.seen & (1 << behind) != 0 {
            Err(ReplayKind::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Marks `counter` as accepted; the caller has checked it.
    fn mark(&mut self, counter: u64) {
        if counter > self.highest {
            let ahead = counter - self.highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = counter;
        } else {
            self.seen |= 1 << (self.highest - counter);
        }
    }
}

#[derive(Debug)]
struct Entry {
    window: CounterWindow,
    /// Value of [`ReplayWindow::clock`] when this sender was last accepted.
    last_used: u64,
}

/// Replay windows for every sender heard from, bounded in number.
#[derive(Debug)]
pub(crate) struct ReplayWindow {
    senders: HashMap<String, Entry>,
    /// Counts accepted packets; orders senders by recency without reading a clock.
    clock: u64,
    max_senders: usize,
}

impl ReplayWindow {
    /// An empty set of windows tracking at most `max_senders` senders (at least one).
    pub(crate) fn new(max_senders: usize) -> Self {
        ReplayWindow {
            senders: HashMap::new(),
            clock: 0,
            max_senders: max_senders.max(1),
        }
    }

    /// Whether `counter` from `sender` would be accepted; changes nothing.
    pub(crate) fn check(&self, sender: &str, counter: u64) -> Result<(), ReplayKind> {
        match self.senders.get(sender) {
            Some(entry) => entry.window.check(counter),
            None => Ok(()),
        }
    }

    /// Accepts `counter` from `sender` if it is new, and records it.
    pub(crate) fn accept(&mut self, sender: &str, counter: u64) -> Result<(), ReplayKind> {
        self.clock += 1;
        if let Some(entry) = self.senders.get_mut(sender) {
            entry.window.check(counter)?;
            entry.window.mark(counter);
            entry.last_used = self.clock;
            return Ok(());
        }
        if self.senders.len() >= self.max_senders {
            self.evict_least_recent();
        }
        self.senders.insert(
            sender.to_owned(),
            Entry {
                window: CounterWindow::starting_at(counter),
                last_used: self.clock,
            },
        );
        Ok(())
    }

    /// Forgets `sender`, e.g. when it left the cluster for good.
    pub(crate) fn forget(&mut self, sender: &str) {
        self.senders.remove(sender);
    }

    /// Number of senders tracked.
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }

    // A linear scan, run only when a new sender arrives at a full table.
    fn evict_least_recent(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(sender, _)| sender.clone());
        if let Some(sender) = oldest {
            self.senders.remove(&sender);
        }
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new(DEFAULT_MAX_SENDERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_counters_are_accepted_once() {
        let mut window = ReplayWindow::default();
        for counter in 0..200 {
            assert_eq!(window.accept("a", counter), Ok(()));
            assert_eq!(window.accept("a", counter), Err(ReplayKind::Duplicate));
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.accept("a", 100), Ok(()));
        for counter in [99, 37, 70, 101, 98] {
            assert_eq!(window.accept("a", counter), Ok(()), "{counter}");
            assert_eq!(window.accept("a", counter), Err(ReplayKind::Duplicate));
        }
        // 101 is now the highest: 37 = 101 - 64 has just left the window.
        assert_eq!(window.check("a", 38), Ok(()));
        assert_eq!(window.check("a", 37), Err(ReplayKind::TooOld));
        assert_eq!(window.check("a", 0), Err(ReplayKind::TooOld));
    }

    #[test]
    fn large_jumps_clear_the_window() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.accept("a", 5), Ok(()));
        assert_eq!(window.accept("a", 5 + REPLAY_WINDOW), Ok(()));
        assert_eq!(window.check("a", 5), Err(ReplayKind::TooOld));
        assert_eq!(window.check("a", 6), Ok(()));
        assert_eq!(window.accept("a", u64::MAX), Ok(()));
        assert_eq!(window.accept("a", u64::MAX), Err(ReplayKind::Duplicate));
        assert_eq!(window.accept("a", u64::MAX - 63), Ok(()));
        assert_eq!(window.accept("a", u64::MAX - 64), Err(ReplayKind::TooOld));
    }

    #[test]
    fn senders_have_separate_windows() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.accept("a", 7), Ok(()));
        assert_eq!(window.accept("b", 7), Ok(()));
        assert_eq!(window.accept("a", 7), Err(ReplayKind::Duplicate));
        window.forget("a");
        assert_eq!(window.accept("a", 7), Ok(()));
    }

    #[test]
    fn the_least_recent_sender_is_evicted_when_full() {
        let mut window = ReplayWindow::new(2);
        assert_eq!(window.accept("a", 1), Ok(()));
        assert_eq!(window.accept("b", 1), Ok(()));
        assert_eq!(window.accept("a", 2), Ok(()));
        assert_eq!(window.accept("c", 1), Ok(()));
        assert_eq!(window.len(), 2);
        // "b" was forgotten, "a" kept.
        assert_eq!(window.check("b", 1), Ok(()));
        assert_eq!(window.check("a", 2), Err(ReplayKind::Duplicate));
    }
}
