//! Serial number arithmetic (RFC 1982, 32 bits) for CmdSN, StatSN, DataSN
//! and R2TSN, and the session's command window (RFC 7143 §4.2.2.1).

/// A 32-bit serial number. Compare only with these methods; raw `<` on
/// wrapping counters is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sn(pub u32);

impl Sn {
    pub fn lt(self, other: Sn) -> bool {
        self.0 != other.0 && (other.0.wrapping_sub(self.0) as i32) > 0
    }
    pub fn le(self, other: Sn) -> bool {
        self.0 == other.0 || self.lt(other)
    }
    pub fn gt(self, other: Sn) -> bool {
        other.lt(self)
    }
    pub fn ge(self, other: Sn) -> bool {
        other.le(self)
    }
    pub fn next(self) -> Sn {
        Sn(self.0.wrapping_add(1))
    }
    pub fn advance(self, n: u32) -> Sn {
        Sn(self.0.wrapping_add(n))
    }
}

/// The session-wide CmdSN window: commands may be sent while
/// CmdSN <= MaxCmdSN (RFC 7143 §4.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdWindow {
    next_cmd_sn: Sn,
    exp_cmd_sn: Sn,
    max_cmd_sn: Sn,
}

impl CmdWindow {
    pub fn new(next_cmd_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) -> Self {
        Self { next_cmd_sn: Sn(next_cmd_sn), exp_cmd_sn: Sn(exp_cmd_sn), max_cmd_sn: Sn(max_cmd_sn) }
    }

    /// CmdSN carried by an immediate PDU (it does not advance the counter).
    pub fn current(&self) -> u32 {
        self.next_cmd_sn.0
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.0
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn.0
    }

    /// Whether a non-immediate command may be sent now.
    pub fn is_open(&self) -> bool {
        self.next_cmd_sn.le(self.max_cmd_sn)
    }

    /// Takes the CmdSN for a non-immediate command, or `None` when the
    /// window is closed (queue the command instead).
    pub fn take(&mut self) -> Option<u32> {
        if !self.is_open() {
            return None;
        }
        let sn = self.next_cmd_sn;
        self.next_cmd_sn = sn.next();
        Some(sn.0)
    }

    /// Applies ExpCmdSN/MaxCmdSN from a target PDU. RFC 7143 §4.2.2.1: if
    /// MaxCmdSN < ExpCmdSN - 1 both are ignored; neither ever moves back.
    pub fn update(&mut self, exp_cmd_sn: u32, max_cmd_sn: u32) {
        let (exp, max) = (Sn(exp_cmd_sn), Sn(max_cmd_sn));
        if max.lt(Sn(exp_cmd_sn.wrapping_sub(1))) {
            return;
        }
        if exp.gt(self.exp_cmd_sn) {
            self.exp_cmd_sn = exp;
        }
        if max.gt(self.max_cmd_sn) {
            self.max_cmd_sn = max;
        }
        // A target may acknowledge beyond what we sent (istgt counts an
        // immediate Text request); never let our counter fall behind it.
        if self.exp_cmd_sn.gt(self.next_cmd_sn) {
            self.next_cmd_sn = self.exp_cmd_sn;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_comparison_wraps() {
        assert!(Sn(0xffff_fff0).lt(Sn(5)));
        assert!(Sn(5).gt(Sn(0xffff_fff0)));
        assert!(Sn(7).le(Sn(7)));
        assert!(!Sn(8).lt(Sn(7)));
    }

    #[test]
    fn window_closes_at_max_cmd_sn() {
        let mut w = CmdWindow::new(10, 10, 11);
        assert_eq!(w.take(), Some(10));
        assert_eq!(w.take(), Some(11));
        assert_eq!(w.take(), None);
        w.update(12, 12);
        assert_eq!(w.take(), Some(12));
    }

    #[test]
    fn window_ignores_backwards_and_invalid_updates() {
        let mut w = CmdWindow::new(10, 10, 20);
        w.update(9, 15);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (10, 20));
        // MaxCmdSN < ExpCmdSN - 1: ignored entirely.
        w.update(30, 25);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (10, 20));
        // A zero window (MaxCmdSN = ExpCmdSN - 1) is valid.
        let mut z = CmdWindow::new(5, 5, 4);
        assert!(!z.is_open());
        z.update(5, 5);
        assert!(z.is_open());
    }

    #[test]
    fn window_follows_a_target_that_counts_immediate_pdus() {
        let mut w = CmdWindow::new(3, 3, 10);
        w.update(4, 12);
        assert_eq!(w.take(), Some(4));
    }
}
