//! SCSI above iSCSI: CDBs the initiator builds (SPC-4, SBC-3), the data
//! they return, and sense data decoded into typed errors. Nothing here
//! knows about iSCSI transport.
//!
//! ```
//! use iscsi_proto::scsi::{cdb, data, lun, ScsiError};
//!
//! // READ of 8 blocks at LBA 2048 fits READ (10).
//! assert_eq!(cdb::read(2048, 8).as_slice(), &[0x28, 0, 0, 0, 0x08, 0, 0, 0, 8, 0]);
//!
//! // LUN 1 in the BHS LUN field.
//! assert_eq!(lun::encode_lun(1)?.to_be_bytes(), [0, 1, 0, 0, 0, 0, 0, 0]);
//!
//! // 1 GiB of 512-byte blocks.
//! let rc = data::ReadCapacity10::parse(&[0, 0x1f, 0xff, 0xff, 0, 0, 2, 0])?;
//! assert_eq!(rc.bytes(), 1 << 30);
//!
//! // CHECK CONDITION with the SCSI Response data segment (SenseLength, sense).
//! let segment = [0, 14, 0x70, 0, 0x05, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0x21, 0x00];
//! let err = ScsiError::from_status(0x02, &segment).ok_or("no error")?;
//! assert_eq!(
//!     err.to_string(),
//!     "ILLEGAL REQUEST: logical block address out of range (asc 0x21 ascq 0x00)"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cdb;
pub mod data;
pub mod lun;
pub mod sense;

pub use cdb::Cdb;
pub use data::DataError;
pub use lun::{LunError, decode_lun, encode_lun};
pub use sense::{ScsiError, ScsiStatus, Sense, SenseError, SenseKey};
