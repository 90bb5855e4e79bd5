//! Helpers shared by the integration tests (not a test binary of its own).

#![allow(dead_code)]

pub mod lab;
pub mod proxy;
