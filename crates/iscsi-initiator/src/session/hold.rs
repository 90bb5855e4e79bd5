//! Whether a busy connection holds commands back (see `io::Link`), chosen
//! by measuring the target rather than assumed.
//!
//! Holding back sends several commands per `writev` and per TCP segment:
//! on tgt (one event-loop thread) it saves a fifth to a third of the
//! initiator's CPU per command at the same or higher IOPS, and istgt's
//! 4 KiB writes gain too. But istgt's 4 KiB reads lost a sixth of their
//! IOPS when they arrived in groups (its threads then sleep and wake more:
//! 33-37 µs of its CPU per command against 26-28 µs; bench/README.md,
//! round 6), and still lose a little since held commands leave at the end
//! of each pass (round 9), so no fixed rule suits both. The connection
//! therefore tries both, in turns, while it is busy, and keeps the one
//! that completes commands faster, holding back unless sending at once is
//! clearly ahead.

use std::time::{Duration, Instant};

/// Completions per measured window: about 25 ms at 40 K IOPS.
const WINDOW: u32 = 1024;
/// Measured windows per mode in one trial (they alternate); the modes are
/// compared by their medians, which one disturbed window does not move.
const TRIALS_PER_MODE: usize = 5;
/// Windows a choice is kept before trying again (about 6 s at 40 K IOPS):
/// a target's load or behaviour may change, and a trial costs little.
const KEEP_WINDOWS: u32 = 256;
/// Sending at once must be this much faster (per cent of the holding
/// time saved) to be chosen: holding costs less CPU, so a tie holds.
const MARGIN_PCT: u32 = 7;

/// The hold-back mode of one connection, and the trial that chose it.
#[derive(Debug)]
pub(super) struct HoldTuner {
    hold: bool,
    phase: Phase,
    /// Busy completions in the current window.
    done: u32,
    /// When the current window began (`None` before its first completion).
    since: Option<Instant>,
}

#[derive(Debug)]
enum Phase {
    /// Alternating modes; each mode first runs a window that is not
    /// measured (the switch's own transient), then one that is.
    Trial { step: usize, hold: [Duration; TRIALS_PER_MODE], free: [Duration; TRIALS_PER_MODE] },
    /// A mode chosen, kept for this many more windows.
    Keep(u32),
}

impl Phase {
    fn trial() -> Self {
        Phase::Trial { step: 0, hold: [Duration::ZERO; TRIALS_PER_MODE], free: [Duration::ZERO; TRIALS_PER_MODE] }
    }
}

impl Default for HoldTuner {
    fn default() -> Self {
        Self { hold: true, phase: Phase::trial(), done: 0, since: None }
    }
}

impl HoldTuner {
    /// Whether a command sent now may be held back.
    pub(super) fn holds(&self) -> bool {
        self.hold
    }

    /// The mode the last trial chose; `None` while one runs.
    pub(super) fn choice(&self) -> Option<bool> {
        matches!(self.phase, Phase::Keep(_)).then_some(self.hold)
    }

    /// A tuner whose trial chose sending at once.
    #[cfg(test)]
    pub(super) fn sending_at_once() -> Self {
        Self { hold: false, phase: Phase::Keep(KEEP_WINDOWS), done: 0, since: None }
    }

    /// Answers counted in the current window, and whether it has begun.
    #[cfg(test)]
    pub(super) fn window(&self) -> (u32, bool) {
        (self.done, self.since.is_some())
    }

    /// Notes a command answered while the connection was busy (holding
    /// back applied); reads the clock once per window.
    pub(super) fn completed(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            return;
        }
        self.done += 1;
        if self.done >= WINDOW {
            let now = Instant::now();
            let took = self.since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
            self.window_ended(took);
            self.done = 0;
            self.since = Some(now);
        }
    }

    /// The connection went quiet: a window spanning idle time would
    /// measure the application, not the target, so it starts again.
    pub(super) fn idle(&mut self) {
        self.done = 0;
        self.since = None;
    }

    fn window_ended(&mut self, took: Duration) {
        match &mut self.phase {
            Phase::Keep(left) => {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.phase = Phase::trial();
                    self.hold = true;
                }
            }
            Phase::Trial { step, hold, free } => {
                // Steps: 0 hold (unmeasured), 1 hold, 2 free (unmeasured), 3 free, 4 hold ...
                let measured = *step % 2 == 1;
                if measured {
                    let times = if self.hold { &mut *hold } else { &mut *free };
                    if let Some(slot) = times.get_mut(*step / 4) {
                        *slot = took;
                    }
                }
                *step += 1;
                if *step >= 4 * TRIALS_PER_MODE {
                    let (h, f) = (median(hold), median(free));
                    self.hold = f.as_nanos() * 100 >= h.as_nanos() * u128::from(100 - MARGIN_PCT);
                    tracing::debug!(
                        hold_us = h.as_micros() as u64,
                        free_us = f.as_micros() as u64,
                        hold = self.hold,
                        "hold-back mode chosen (median window times)"
                    );
                    self.phase = Phase::Keep(KEEP_WINDOWS);
                } else if measured {
                    self.hold = !self.hold;
                }
            }
        }
    }
}

fn median(times: &mut [Duration; TRIALS_PER_MODE]) -> Duration {
    times.sort_unstable();
    times.get(TRIALS_PER_MODE / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the trial with windows of the given lengths per mode.
    fn trial(hold_ms: u64, free_ms: u64) -> HoldTuner {
        let mut t = HoldTuner::default();
        for i in 0..4 * TRIALS_PER_MODE {
            // The first measured window of each mode is badly disturbed:
            // the medians ignore it.
            let ms = if i < 4 {
                1000
            } else if t.holds() {
                hold_ms
            } else {
                free_ms
            };
            t.window_ended(Duration::from_millis(ms));
        }
        t
    }

    #[test]
    fn starts_holding_and_alternates_during_the_trial() {
        let mut t = HoldTuner::default();
        let mut modes = Vec::new();
        for _ in 0..4 * TRIALS_PER_MODE {
            modes.push(t.holds());
            t.window_ended(Duration::from_millis(10));
        }
        let round = [true, true, false, false];
        assert_eq!(modes, round.repeat(TRIALS_PER_MODE));
    }

    #[test]
    fn sending_at_once_wins_only_when_clearly_faster() {
        assert!(!trial(100, 80).holds(), "20 % faster without holding back");
        assert!(trial(100, 95).holds(), "5 % is within the margin: a tie holds (less CPU)");
        assert!(trial(80, 100).holds());
    }

    #[test]
    fn a_choice_is_kept_then_tried_again() {
        let mut t = trial(100, 50);
        assert_eq!((t.holds(), t.choice()), (false, Some(false)));
        for _ in 0..KEEP_WINDOWS - 1 {
            t.window_ended(Duration::from_millis(1));
            assert!(!t.holds());
        }
        t.window_ended(Duration::from_millis(1));
        assert!(t.holds(), "a new trial starts by holding back");
        assert_eq!(t.choice(), None);
        assert!(matches!(t.phase, Phase::Trial { step: 0, .. }));
    }

    #[test]
    fn windows_count_completions_and_restart_after_idle() {
        let mut t = HoldTuner::default();
        t.completed();
        for _ in 0..WINDOW - 1 {
            t.completed();
        }
        assert!(matches!(t.phase, Phase::Trial { step: 0, .. }), "one short of a window");
        t.idle();
        assert_eq!((t.done, t.since), (0, None));
        for _ in 0..=WINDOW {
            t.completed();
        }
        assert!(matches!(t.phase, Phase::Trial { step: 1, .. }));
    }
}
