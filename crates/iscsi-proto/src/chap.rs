//! CHAP authentication for iSCSI login (RFC 7143 §12.1.3, RFC 1994).
//!
//! The response is `H(id || secret || challenge)`; the algorithm numbers
//! follow the IANA PPP registry (5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256).

use crate::text::TextPairs;

/// A secret that never prints itself and is wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(zeroize::Zeroizing::new(bytes.into()))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// CHAP digest algorithms (CHAP_A values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChapAlgorithm {
    Md5 = 5,
    Sha1 = 6,
    Sha256 = 7,
    Sha3_256 = 8,
}

/// The credentials and preferences for CHAP.
#[derive(Debug, Clone)]
pub struct ChapConfig {
    /// CHAP_N we send.
    pub user: String,
    pub secret: Secret,
    /// Offered CHAP_A values, in order of preference. Default: MD5 alone.
    pub algorithms: Vec<ChapAlgorithm>,
    /// Mutual CHAP: the name and secret the target must answer with.
    pub target: Option<(String, Secret)>,
}

/// Authentication failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    #[error("target did not send {0}")]
    MissingKey(&'static str),
    #[error("target chose CHAP algorithm {0:?}, which was not offered")]
    AlgorithmNotOffered(String),
    #[error("malformed {key}: {reason}")]
    Malformed {
        key: &'static str,
        reason: &'static str,
    },
    #[error("target reflected our own CHAP challenge back")]
    ReflectedChallenge,
    #[error("target answered mutual CHAP with name {0:?}, expected another")]
    WrongTargetName(String),
    #[error("target's CHAP response is wrong (mutual authentication failed)")]
    WrongTargetResponse,
}

/// The initiator side of a CHAP exchange, without I/O.
#[derive(Debug)]
pub struct ChapInitiator {
    config: ChapConfig,
}

impl ChapInitiator {
    pub fn new(config: ChapConfig) -> Self {
        Self { config }
    }

    /// Keys for the first security PDU after AuthMethod=CHAP is agreed:
    /// `CHAP_A=<offered list>`.
    pub fn algorithm_offer(&self) -> TextPairs {
        let _ = &self.config;
        todo!()
    }

    /// Handles the target's CHAP_A/CHAP_I/CHAP_C and returns CHAP_N, CHAP_R
    /// and, for mutual CHAP, our own CHAP_I and CHAP_C (16 random bytes).
    pub fn respond(&mut self, target: &TextPairs) -> Result<TextPairs, ChapError> {
        let _ = target;
        todo!()
    }

    /// For mutual CHAP: checks the target's CHAP_N/CHAP_R. Ok without mutual.
    pub fn verify_target(&self, target: &TextPairs) -> Result<(), ChapError> {
        let _ = target;
        todo!()
    }

    /// Whether the target has to prove itself (mutual CHAP).
    pub fn is_mutual(&self) -> bool {
        self.config.target.is_some()
    }
}
