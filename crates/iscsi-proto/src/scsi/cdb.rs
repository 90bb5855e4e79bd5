//! CDB builders. A CDB is at most 16 bytes here; `len` says how many count.

/// A command descriptor block and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    pub bytes: [u8; 16],
    pub len: u8,
}
