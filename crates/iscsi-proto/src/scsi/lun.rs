//! LUN encoding in the 8-byte iSCSI LUN field (SAM-5 §4.7).
