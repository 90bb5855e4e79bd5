//! SCSI above iSCSI: CDBs the initiator builds (SPC-4, SBC-3), the data
//! they return, and sense data decoded into typed errors. Nothing here
//! knows about iSCSI transport.

pub mod cdb;
pub mod data;
pub mod lun;
pub mod sense;
