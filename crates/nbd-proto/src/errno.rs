//! Error values of the transmission phase (proto.md "Error values"): a closed set, not the host's errno.

use std::fmt;

/// An NBD error value. The protocol restricts replies to these; a server maps anything else onto them
/// (e.g. `EDQUOT`/`EFBIG` onto [`Errno::Enospc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Errno {
    /// Operation not permitted: a write or trim on a read-only export.
    Eperm = 1,
    /// Input/output error.
    Eio = 5,
    /// Cannot allocate memory; the spec asks servers to avoid it.
    Enomem = 12,
    /// Invalid argument: unknown command or flag, misaligned or oversize request, read past the end.
    Einval = 22,
    /// No space left on device: a write past the end of the export.
    Enospc = 28,
    /// Value too large: only for `NBD_CMD_READ` with `NBD_CMD_FLAG_DF`.
    Eoverflow = 75,
    /// Operation not supported: only for `NBD_CMD_WRITE_ZEROES` with `NBD_CMD_FLAG_FAST_ZERO`.
    Enotsup = 95,
    /// The server is shutting down; the client must disconnect.
    Eshutdown = 108,
}

impl Errno {
    pub const ALL: [Errno; 8] = [
        Errno::Eperm,
        Errno::Eio,
        Errno::Enomem,
        Errno::Einval,
        Errno::Enospc,
        Errno::Eoverflow,
        Errno::Enotsup,
        Errno::Eshutdown,
    ];

    /// The value sent in the reply's error field.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The error for a wire value; `None` for zero (success) and for values the protocol does not define.
    pub fn from_code(code: u32) -> Option<Errno> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The constant's name in the spec, for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Eperm => "NBD_EPERM",
            Errno::Eio => "NBD_EIO",
            Errno::Enomem => "NBD_ENOMEM",
            Errno::Einval => "NBD_EINVAL",
            Errno::Enospc => "NBD_ENOSPC",
            Errno::Eoverflow => "NBD_EOVERFLOW",
            Errno::Enotsup => "NBD_ENOTSUP",
            Errno::Eshutdown => "NBD_ESHUTDOWN",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_the_specs() {
        let codes: Vec<u32> = Errno::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [1, 5, 12, 22, 28, 75, 95, 108]);
        for e in Errno::ALL {
            assert_eq!(Errno::from_code(e.code()), Some(e));
        }
        assert_eq!(Errno::from_code(0), None);
        assert_eq!(Errno::from_code(2), None);
        assert_eq!(Errno::Einval.to_string(), "NBD_EINVAL (22)");
    }
}
