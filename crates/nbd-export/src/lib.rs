//! Generic tokio NBD server (work in progress).
