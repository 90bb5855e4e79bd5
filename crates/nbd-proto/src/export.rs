//! What the server tells a client about its export: name, description, size, transmission flags and
//! block size constraints (proto.md "Block size constraints", `NBD_INFO_EXPORT`, `NBD_INFO_BLOCK_SIZE`).

use crate::flags::TransmissionFlags;

/// Longest string the protocol allows (proto.md "Conventions": names and messages MUST be no longer
/// than 4096 bytes).
pub const MAX_STRING_LEN: usize = 4096;

/// Block size constraints (proto.md "Block size constraints").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSizes {
    /// Smallest addressable length and alignment: a power of two, 1 to 64 KiB.
    pub min: u32,
    /// Size at which aligned I/O is efficient: a power of two, at least `max(min, 512)`.
    pub preferred: u32,
    /// Largest request length: a multiple of `min`, or `u32::MAX` for no limit.
    pub max: u32,
}

impl BlockSizes {
    /// The constraints a server without advertised sizes should support (the spec's defaults).
    pub const DEFAULT: BlockSizes = BlockSizes { min: 1, preferred: 4096, max: u32::MAX };

    /// Checks the spec's rules for advertised constraints against an export of `size` bytes.
    pub fn validate(&self, size: u64) -> Result<(), ExportError> {
        let bad = |rule| Err(ExportError::BlockSizes { sizes: *self, rule });
        if !self.min.is_power_of_two() || self.min > 65_536 {
            return bad("the minimum must be a power of two no larger than 64 KiB");
        }
        if !self.preferred.is_power_of_two() || self.preferred < self.min.max(512) {
            return bad("the preferred size must be a power of two at least max(minimum, 512)");
        }
        if self.max == 0 || (self.max != u32::MAX && !self.max.is_multiple_of(self.min)) {
            return bad("the maximum must be a nonzero multiple of the minimum or 0xffffffff");
        }
        if u64::from(self.max) < u64::from(self.preferred).min(size) {
            return bad("the maximum must be at least the smaller of the preferred size and the export size");
        }
        Ok(())
    }
}

impl Default for BlockSizes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The one export a [`crate::ServerHandshake`] offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Selected by this name or by the empty (default) name.
    pub name: String,
    /// Human-readable text for `NBD_INFO_DESCRIPTION` and `NBD_OPT_LIST`.
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags. `HAS_FLAGS` is always added and `SEND_DF` is managed by the handshake (it
    /// depends on structured replies), so neither needs setting here.
    pub flags: TransmissionFlags,
    pub block_sizes: BlockSizes,
}

impl ExportInfo {
    /// Strings within the protocol's limit, block sizes valid, `SEND_FAST_ZERO` only with
    /// `SEND_WRITE_ZEROES` (proto.md "Transmission flags").
    pub fn validate(&self) -> Result<(), ExportError> {
        if self.name.len() > MAX_STRING_LEN || self.name.contains('\0') {
            return Err(ExportError::Name);
        }
        if self.description.len() > MAX_STRING_LEN || self.description.contains('\0') {
            return Err(ExportError::Description);
        }
        if self.flags.contains(TransmissionFlags::SEND_FAST_ZERO)
            && !self.flags.contains(TransmissionFlags::SEND_WRITE_ZEROES)
        {
            return Err(ExportError::FastZeroWithoutWriteZeroes);
        }
        self.block_sizes.validate(self.size)
    }

    /// Does the client's `name` select this export? The empty name is the default export.
    pub fn selected_by(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    /// The flags sent to a client: `HAS_FLAGS` set, `SEND_DF` only with structured replies (our reads
    /// are always one chunk, so DF costs nothing).
    pub fn flags_for(&self, structured_replies: bool) -> TransmissionFlags {
        self.flags.union(TransmissionFlags::HAS_FLAGS).with(TransmissionFlags::SEND_DF, structured_replies)
    }
}

/// An export description the protocol cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("export name longer than {MAX_STRING_LEN} bytes or containing NUL")]
    Name,
    #[error("export description longer than {MAX_STRING_LEN} bytes or containing NUL")]
    Description,
    #[error("block sizes {sizes:?} break the NBD rule: {rule}")]
    BlockSizes { sizes: BlockSizes, rule: &'static str },
    #[error("SEND_FAST_ZERO requires SEND_WRITE_ZEROES")]
    FastZeroWithoutWriteZeroes,
}

/// The export as agreed for the transmission phase: what requests are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmissionParams {
    pub size: u64,
    /// The flags as sent to the client.
    pub flags: TransmissionFlags,
    pub block_sizes: BlockSizes,
    /// `NBD_OPT_STRUCTURED_REPLY` was acknowledged: reads must be answered with structured replies.
    pub structured_replies: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(min: u32, preferred: u32, max: u32) -> BlockSizes {
        BlockSizes { min, preferred, max }
    }

    #[test]
    fn block_size_rules() {
        assert!(BlockSizes::DEFAULT.validate(1 << 40).is_ok());
        assert!(sizes(512, 4096, 1 << 25).validate(1 << 30).is_ok());
        assert!(sizes(4096, 4096, u32::MAX).validate(1 << 30).is_ok());
        // Not a power of two, too big, preferred too small, max not a multiple, max too small.
        assert!(sizes(3, 4096, 1 << 20).validate(1 << 30).is_err());
        assert!(sizes(1 << 17, 1 << 17, 1 << 20).validate(1 << 30).is_err());
        assert!(sizes(1, 256, 1 << 20).validate(1 << 30).is_err());
        assert!(sizes(4096, 2048, 1 << 20).validate(1 << 30).is_err());
        assert!(sizes(512, 4096, 1000).validate(1 << 30).is_err());
        assert!(sizes(512, 4096, 0).validate(1 << 30).is_err());
        assert!(sizes(512, 4096, 1024).validate(1 << 30).is_err());
        // A small export lowers the floor for max.
        assert!(sizes(512, 4096, 1024).validate(1024).is_ok());
    }

    fn export() -> ExportInfo {
        ExportInfo {
            name: "lun0".into(),
            description: "a LUN".into(),
            size: 1 << 20,
            flags: TransmissionFlags::SEND_FLUSH,
            block_sizes: BlockSizes::DEFAULT,
        }
    }

    #[test]
    fn export_rules() {
        assert!(export().validate().is_ok());
        let mut e = export();
        e.name = "x".repeat(MAX_STRING_LEN + 1);
        assert_eq!(e.validate(), Err(ExportError::Name));
        let mut e = export();
        e.description = "a\0b".into();
        assert_eq!(e.validate(), Err(ExportError::Description));
        let mut e = export();
        e.flags = TransmissionFlags::SEND_FAST_ZERO;
        assert_eq!(e.validate(), Err(ExportError::FastZeroWithoutWriteZeroes));
    }

    #[test]
    fn empty_and_own_name_select() {
        let e = export();
        assert!(e.selected_by(b""));
        assert!(e.selected_by(b"lun0"));
        assert!(!e.selected_by(b"lun1"));
    }

    #[test]
    fn df_follows_structured_replies() {
        let mut e = export();
        e.flags |= TransmissionFlags::SEND_DF;
        assert_eq!(e.flags_for(false).bits(), 0b101);
        assert_eq!(e.flags_for(true).bits(), 0b1000_0101);
    }
}
