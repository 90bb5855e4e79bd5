//! rsiscsid: the initiator service.
