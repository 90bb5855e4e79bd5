//! SCSI status and sense data (SPC-4 §4.5), fixed and descriptor formats.
