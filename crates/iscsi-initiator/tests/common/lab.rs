//! The loopback lab started by `scripts/lab-up.sh`: tgt and istgt with
//! RAM-backed LUNs. Tests fail (never skip) when it is not running.

use iscsi_initiator::{PortalAddr, SessionConfig};
use iscsi_proto::chap::{ChapConfig, Secret};

/// One real target daemon of the lab.
#[derive(Debug, Clone, Copy)]
pub struct Lab {
    pub name: &'static str,
    pub port: u16,
    pub iqn_base: &'static str,
    /// The disk LUN: tgt's LUN 0 is its controller, istgt's disk is LUN 0.
    pub lun: u64,
}

pub const TGT: Lab = Lab { name: "tgt", port: 3260, iqn_base: "iqn.2024-01.lab.tgt", lun: 1 };
pub const ISTGT: Lab = Lab { name: "istgt", port: 3261, iqn_base: "iqn.2024-01.lab.istgt", lun: 0 };
pub const BOTH: [Lab; 2] = [TGT, ISTGT];

pub const CHAP_USER: &str = "labuser";
pub const CHAP_SECRET: &str = "labsecret123";
pub const MUTUAL_USER: &str = "muser";
pub const MUTUAL_SECRET: &str = "musersecret1";
pub const MUTUAL_TARGET_USER: &str = "mtarget";
pub const MUTUAL_TARGET_SECRET: &str = "mtargetsecret";
pub const DISCOVERY_CHAP_PORT: u16 = 3262;
pub const DISCOVERY_CHAP_USER: &str = "discuser";
pub const DISCOVERY_CHAP_SECRET: &str = "discsecret12";

/// Panics with instructions unless the lab is up.
pub fn require_lab() {
    let env = std::env::var("RSISCSI_LAB_ENV").unwrap_or_else(|_| "/tmp/rsiscsi-lab/lab.env".into());
    assert!(
        std::path::Path::new(&env).exists(),
        "the target lab is not running ({env} missing): run the tests with scripts/test.sh, or start scripts/lab-up.sh first"
    );
}

impl Lab {
    pub fn portal(&self) -> PortalAddr {
        PortalAddr { host: "127.0.0.1".into(), port: self.port }
    }
    pub fn iqn(&self, t: &str) -> String {
        format!("{}:{t}", self.iqn_base)
    }
}

pub fn config() -> SessionConfig {
    require_lab();
    SessionConfig::new("iqn.2026-11.rs.rsiscsi:tests")
}

pub fn chap(user: &str, secret: &str) -> ChapConfig {
    ChapConfig::new(user.to_string(), Secret::new(secret.as_bytes().to_vec()))
}

pub fn mutual(target_secret: &str) -> ChapConfig {
    let mut c = chap(MUTUAL_USER, MUTUAL_SECRET);
    c.target = Some((MUTUAL_TARGET_USER.to_string(), Secret::new(target_secret.as_bytes().to_vec())));
    c
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn pattern(len: usize, seed: u64) -> bytes::Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    bytes::Bytes::from(v)
}
