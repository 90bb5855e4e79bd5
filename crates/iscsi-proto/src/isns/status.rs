//! Response status codes (RFC 4171 §5.4).

use std::fmt;

/// The 4-byte status at the start of every response payload (RFC 4171 §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const SUCCESS: Self = Self(0);
    pub const UNKNOWN_ERROR: Self = Self(1);
    pub const MESSAGE_FORMAT_ERROR: Self = Self(2);
    pub const INVALID_REGISTRATION: Self = Self(3);
    pub const INVALID_QUERY: Self = Self(5);
    pub const SOURCE_UNKNOWN: Self = Self(6);
    pub const SOURCE_ABSENT: Self = Self(7);
    pub const SOURCE_UNAUTHORIZED: Self = Self(8);
    pub const NO_SUCH_ENTRY: Self = Self(9);
    pub const VERSION_NOT_SUPPORTED: Self = Self(10);
    pub const INTERNAL_ERROR: Self = Self(11);
    pub const BUSY: Self = Self(12);
    pub const OPTION_NOT_UNDERSTOOD: Self = Self(13);
    pub const INVALID_UPDATE: Self = Self(14);
    pub const MESSAGE_NOT_SUPPORTED: Self = Self(15);
    pub const SCN_EVENT_REJECTED: Self = Self(16);
    pub const SCN_REGISTRATION_REJECTED: Self = Self(17);
    pub const ATTRIBUTE_NOT_IMPLEMENTED: Self = Self(18);
    pub const ESI_NOT_AVAILABLE: Self = Self(21);
    pub const INVALID_DEREGISTRATION: Self = Self(22);
    pub const REGISTRATION_FEATURE_NOT_SUPPORTED: Self = Self(23);

    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }

    /// The RFC 4171 name of the code, if assigned.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Successful",
            1 => "Unknown Error",
            2 => "Message Format Error",
            3 => "Invalid Registration",
            5 => "Invalid Query",
            6 => "Source Unknown",
            7 => "Source Absent",
            8 => "Source Unauthorized",
            9 => "No Such Entry",
            10 => "Version Not Supported",
            11 => "Internal Error",
            12 => "Busy",
            13 => "Option Not Understood",
            14 => "Invalid Update",
            15 => "Message (FUNCTION_ID) Not Supported",
            16 => "SCN Event Rejected",
            17 => "SCN Registration Rejected",
            18 => "Attribute Not Implemented",
            19 => "FC_DOMAIN_ID Not Available",
            20 => "FC_DOMAIN_ID Not Allocated",
            21 => "ESI Not Available",
            22 => "Invalid Deregistration",
            23 => "Registration Feature Not Supported",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "status {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_code() {
        assert_eq!(Status(9).to_string(), "No Such Entry (9)");
        assert_eq!(Status::SOURCE_UNAUTHORIZED.to_string(), "Source Unauthorized (8)");
        assert_eq!(Status(4).to_string(), "status 4");
        assert!(Status(0).is_success());
    }
}
