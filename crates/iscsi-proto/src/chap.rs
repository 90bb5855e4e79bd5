//! CHAP authentication for iSCSI login (RFC 7143 §12.1.3, RFC 1994).
//!
//! The response is `H(id || secret || challenge)`; the algorithm numbers
//! follow the IANA PPP registry (5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256).

use crate::text::TextPairs;
use md5::Digest;
use rand::RngCore as _;

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

impl ChapAlgorithm {
    /// The CHAP_A number (IANA PPP authentication algorithms registry).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            5 => Some(Self::Md5),
            6 => Some(Self::Sha1),
            7 => Some(Self::Sha256),
            8 => Some(Self::Sha3_256),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// RFC 1994 §4.1: the hash of the concatenated parts.
    fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Self::Md5 => run::<md5::Md5>(parts),
            Self::Sha1 => run::<sha1::Sha1>(parts),
            Self::Sha256 => run::<sha2::Sha256>(parts),
            Self::Sha3_256 => run::<sha3::Sha3_256>(parts),
        }
    }

    /// RFC 7143 §12.1.3: `CHAP_R = H(CHAP_I || secret || CHAP_C)`.
    fn response(self, id: u8, secret: &Secret, challenge: &[u8]) -> Vec<u8> {
        self.hash(&[&[id], secret.expose(), challenge])
    }
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

impl ChapConfig {
    /// One-way CHAP with MD5, the only algorithm every target knows (tgt
    /// reads CHAP_A=7 as SHA-1, istgt knows only MD5).
    pub fn new(user: impl Into<String>, secret: Secret) -> Self {
        Self { user: user.into(), secret, algorithms: vec![ChapAlgorithm::Md5], target: None }
    }

    /// Replaces the offered algorithms (in order of preference).
    pub fn with_algorithms(mut self, algorithms: Vec<ChapAlgorithm>) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// Turns on mutual CHAP: the target must prove it knows `secret` under `name`.
    pub fn with_target(mut self, name: impl Into<String>, secret: Secret) -> Self {
        self.target = Some((name.into(), secret));
        self
    }
}

/// Authentication failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    #[error("target did not send {0}")]
    MissingKey(&'static str),
    #[error("target chose CHAP algorithm {0:?}, which was not offered")]
    AlgorithmNotOffered(String),
    #[error("malformed {key}: {reason}")]
    Malformed { key: &'static str, reason: &'static str },
    #[error("target reflected our own CHAP challenge back")]
    ReflectedChallenge,
    #[error("target answered mutual CHAP with name {0:?}, expected another")]
    WrongTargetName(String),
    #[error("target's CHAP response is wrong (mutual authentication failed)")]
    WrongTargetResponse,
    /// RFC 7143 §12.1.3: the secrets of the two directions must differ, or a
    /// target could answer our challenge by reflecting it back to us.
    #[error("mutual CHAP needs different secrets for initiator and target")]
    SameSecretBothWays,
    /// The operating system gave no random bytes for our challenge.
    #[error("no random numbers from the operating system for the CHAP challenge")]
    NoRandomness,
    /// `verify_target` was called before `respond` sent our challenge.
    #[error("mutual CHAP check before our challenge was sent")]
    NoChallengeSent,
}

/// RFC 7143 §12.1.3: challenges above 1024 bytes are refused.
pub const MAX_CHALLENGE_LEN: usize = 1024;

/// Length of the challenge we send in mutual CHAP.
const OUR_CHALLENGE_LEN: usize = 16;

/// How much of a refused CHAP_A value is echoed in an error.
const ERROR_ECHO: usize = 32;

/// What `respond` remembers for `verify_target`.
#[derive(Debug)]
struct Exchange {
    algorithm: ChapAlgorithm,
    target_challenge: Vec<u8>,
    /// Our CHAP_I and CHAP_C, for mutual CHAP.
    ours: Option<(u8, Vec<u8>)>,
}

/// The initiator side of a CHAP exchange, without I/O.
#[derive(Debug)]
pub struct ChapInitiator {
    config: ChapConfig,
    exchange: Option<Exchange>,
}

impl ChapInitiator {
    pub fn new(config: ChapConfig) -> Self {
        Self { config, exchange: None }
    }

    /// The offered algorithms; MD5 when the list was left empty.
    fn offered(&self) -> &[ChapAlgorithm] {
        if self.config.algorithms.is_empty() { &[ChapAlgorithm::Md5] } else { &self.config.algorithms }
    }

    /// Keys for the first security PDU after AuthMethod=CHAP is agreed:
    /// `CHAP_A=<offered list>`.
    pub fn algorithm_offer(&self) -> TextPairs {
        let list = self.offered().iter().map(|a| a.code().to_string()).collect::<Vec<_>>().join(",");
        vec![("CHAP_A".to_owned(), list)]
    }

    /// Handles the target's CHAP_A/CHAP_I/CHAP_C and returns CHAP_N, CHAP_R
    /// and, for mutual CHAP, our own CHAP_I and CHAP_C (16 random bytes).
    pub fn respond(&mut self, target: &TextPairs) -> Result<TextPairs, ChapError> {
        let mut id = [0u8; 1];
        let mut challenge = [0u8; OUR_CHALLENGE_LEN];
        if self.is_mutual() {
            fill_random(&mut id)?;
            fill_random(&mut challenge)?;
            // Never send the target's own challenge back to it: regenerate
            // on the (astronomically unlikely) match.
            let target_c = lookup(target, "CHAP_C")?.map(|c| decode_binary_value("CHAP_C", c));
            if let Some(Ok(tc)) = &target_c {
                while tc.as_slice() == challenge {
                    fill_random(&mut challenge)?;
                }
            }
        }
        let [id] = id;
        self.respond_with(target, id, challenge.to_vec())
    }

    /// `respond` with our mutual CHAP_I/CHAP_C given, so tests can fix them.
    fn respond_with(&mut self, target: &TextPairs, our_id: u8, our_challenge: Vec<u8>) -> Result<TextPairs, ChapError> {
        self.exchange = None;
        let secret = self.config.secret.expose();
        if self.config.target.as_ref().is_some_and(|(_, t)| t.expose() == secret) {
            return Err(ChapError::SameSecretBothWays);
        }
        let a = lookup(target, "CHAP_A")?.ok_or(ChapError::MissingKey("CHAP_A"))?;
        // RFC 7143 §12.1.3: the target answers with one algorithm from our list.
        let algorithm = a
            .parse::<u8>()
            .ok()
            .filter(|_| a.bytes().all(|b| b.is_ascii_digit()))
            .and_then(ChapAlgorithm::from_code)
            .filter(|alg| self.offered().contains(alg))
            .ok_or_else(|| ChapError::AlgorithmNotOffered(echo(a)))?;
        let i = lookup(target, "CHAP_I")?.ok_or(ChapError::MissingKey("CHAP_I"))?;
        let id = parse_identifier(i)?;
        let c = lookup(target, "CHAP_C")?.ok_or(ChapError::MissingKey("CHAP_C"))?;
        let target_challenge = decode_binary_value("CHAP_C", c)?;

        let response = algorithm.response(id, &self.config.secret, &target_challenge);
        let mut out = vec![
            ("CHAP_N".to_owned(), self.config.user.clone()),
            ("CHAP_R".to_owned(), encode_binary_value(&response)),
        ];
        let ours = if self.is_mutual() {
            out.push(("CHAP_I".to_owned(), our_id.to_string()));
            out.push(("CHAP_C".to_owned(), encode_binary_value(&our_challenge)));
            Some((our_id, our_challenge))
        } else {
            None
        };
        self.exchange = Some(Exchange { algorithm, target_challenge, ours });
        Ok(out)
    }

    /// For mutual CHAP: checks the target's CHAP_N/CHAP_R. Ok without mutual.
    pub fn verify_target(&self, target: &TextPairs) -> Result<(), ChapError> {
        let Some((name, secret)) = &self.config.target else {
            return Ok(());
        };
        let Some(Exchange { algorithm, target_challenge, ours: Some((our_id, our_challenge)) }) = &self.exchange else {
            return Err(ChapError::NoChallengeSent);
        };
        // RFC 7143 §12.1.3: a challenge that equals ours means the target may
        // be getting us to compute its answer for it.
        if target_challenge == our_challenge {
            return Err(ChapError::ReflectedChallenge);
        }
        let n = lookup(target, "CHAP_N")?.ok_or(ChapError::MissingKey("CHAP_N"))?;
        if n != name {
            return Err(ChapError::WrongTargetName(n.to_owned()));
        }
        let r = lookup(target, "CHAP_R")?.ok_or(ChapError::MissingKey("CHAP_R"))?;
        let got = decode_binary_value("CHAP_R", r)?;
        let want = algorithm.response(*our_id, secret, our_challenge);
        if !constant_time_eq(&got, &want) {
            return Err(ChapError::WrongTargetResponse);
        }
        Ok(())
    }

    /// Whether the target has to prove itself (mutual CHAP).
    pub fn is_mutual(&self) -> bool {
        self.config.target.is_some()
    }
}

/// Challenges come from the operating system's generator (RFC 1994 §2.3:
/// they must be unpredictable); `OsRng::fill_bytes` would panic on failure.
fn fill_random(buf: &mut [u8]) -> Result<(), ChapError> {
    rand::rngs::OsRng.try_fill_bytes(buf).map_err(|_| ChapError::NoRandomness)
}

/// The value of a CHAP key; a key sent twice is refused rather than
/// guessing which one counts.
fn lookup<'a>(pairs: &'a TextPairs, key: &'static str) -> Result<Option<&'a str>, ChapError> {
    let mut found = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(ChapError::Malformed { key, reason: "sent more than once" });
    }
    Ok(first)
}

/// RFC 7143 §12.1.3: CHAP_I is a decimal number from 0 to 255.
fn parse_identifier(text: &str) -> Result<u8, ChapError> {
    let malformed = ChapError::Malformed { key: "CHAP_I", reason: "not a decimal number from 0 to 255" };
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed);
    }
    text.parse::<u8>().map_err(|_| malformed)
}

/// RFC 7143 §6.1 binary-value: `0x`/`0X` then hex digits, or `0b`/`0B`
/// then base64, at most 1024 bytes (RFC 7143 §12.1.3 bounds CHAP_C so) and
/// not empty. Errors name `key`.
fn decode_binary_value(key: &'static str, text: &str) -> Result<Vec<u8>, ChapError> {
    let malformed = |reason| ChapError::Malformed { key, reason };
    let (prefix, body) = text.split_at_checked(2).ok_or(malformed("not a 0x hex or 0b base64 binary value"))?;
    let bytes = match prefix {
        "0x" | "0X" => {
            if body.len() % 2 != 0 {
                return Err(malformed("odd number of hex digits"));
            }
            if body.len() > 2 * MAX_CHALLENGE_LEN {
                return Err(malformed("longer than 1024 bytes"));
            }
            body.as_bytes()
                .chunks_exact(2)
                .map(|pair| match pair {
                    [hi, lo] => Some((hex_digit(*hi)? << 4) | hex_digit(*lo)?),
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or(malformed("not hexadecimal"))?
        }
        "0b" | "0B" => {
            use base64::Engine as _;
            if body.len() > MAX_CHALLENGE_LEN.div_ceil(3) * 4 {
                return Err(malformed("longer than 1024 bytes"));
            }
            base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| malformed("not base64"))?
        }
        _ => return Err(malformed("not a 0x hex or 0b base64 binary value")),
    };
    if bytes.is_empty() {
        return Err(malformed("empty"));
    }
    if bytes.len() > MAX_CHALLENGE_LEN {
        return Err(malformed("longer than 1024 bytes"));
    }
    Ok(bytes)
}

/// `0x` and lower-case hex, the form we send.
fn encode_binary_value(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Compares without an early exit, so timing does not tell an attacker how
/// much of a forged response was right (lengths are public).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn echo(s: &str) -> String {
    s.chars().take(ERROR_ECHO).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// The challenge of the vectors below.
    const CHALLENGE: &str = "0xa1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn kv(list: &[(&str, &str)]) -> TextPairs {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn get<'a>(pairs: &'a TextPairs, key: &str) -> &'a str {
        &pairs.iter().find(|(k, _)| k == key).unwrap().1
    }

    fn one_way(algorithms: Vec<ChapAlgorithm>) -> ChapInitiator {
        ChapInitiator::new(ChapConfig::new("labuser", Secret::new("labsecret123")).with_algorithms(algorithms))
    }

    fn mutual() -> ChapInitiator {
        ChapInitiator::new(
            ChapConfig::new("muser", Secret::new("labsecret123")).with_target("mtarget", Secret::new("mtargetsecret")),
        )
    }

    fn challenge(a: &str) -> TextPairs {
        kv(&[("CHAP_A", a), ("CHAP_I", "42"), ("CHAP_C", CHALLENGE)])
    }

    #[test]
    fn algorithm_codes() {
        for (alg, code) in [
            (ChapAlgorithm::Md5, 5),
            (ChapAlgorithm::Sha1, 6),
            (ChapAlgorithm::Sha256, 7),
            (ChapAlgorithm::Sha3_256, 8),
        ] {
            assert_eq!(alg.code(), code);
            assert_eq!(ChapAlgorithm::from_code(code), Some(alg));
        }
        assert_eq!(ChapAlgorithm::from_code(4), None);
        assert_eq!(ChapAlgorithm::from_code(9), None);
    }

    #[test]
    fn config_defaults_to_md5_one_way() {
        let c = ChapConfig::new("u", Secret::new("s"));
        assert_eq!(c.algorithms, vec![ChapAlgorithm::Md5]);
        assert!(c.target.is_none());
        assert_eq!(ChapInitiator::new(c).algorithm_offer(), kv(&[("CHAP_A", "5")]));
        let all =
            one_way(vec![ChapAlgorithm::Sha3_256, ChapAlgorithm::Sha256, ChapAlgorithm::Sha1, ChapAlgorithm::Md5]);
        assert_eq!(all.algorithm_offer(), kv(&[("CHAP_A", "8,7,6,5")]));
        assert_eq!(one_way(vec![]).algorithm_offer(), kv(&[("CHAP_A", "5")]));
    }

    /// Expected values from Python: hashlib.new(alg, bytes([42]) +
    /// b"labsecret123" + bytes.fromhex("a1b2...8f90")).hexdigest().
    #[test]
    fn responses_match_independent_vectors() {
        for (alg, code, want) in [
            (ChapAlgorithm::Md5, "5", "0xade3b99969cfb5938fc97a17b9cd24f8"),
            (ChapAlgorithm::Sha1, "6", "0x30ea6d6ec5fc07096b2e0ff96a698f645e93e70e"),
            (ChapAlgorithm::Sha256, "7", "0x6bbc7f0aa16decb09f7ff3a1e89c04c0272ac33a2d6df358e6fbc6e3a085f065"),
            (ChapAlgorithm::Sha3_256, "8", "0xd1414f61384bdce8dcae9fc4e60abce800565b7d104dae46fa5403b3bc842fbd"),
        ] {
            let mut c = one_way(vec![alg]);
            let out = c.respond(&challenge(code)).unwrap();
            assert_eq!(out, kv(&[("CHAP_N", "labuser"), ("CHAP_R", want)]), "{alg:?}");
            // One-way: nothing to verify.
            assert_eq!(c.verify_target(&TextPairs::new()), Ok(()));
        }
    }

    #[test]
    fn base64_and_upper_case_hex_challenges_accepted() {
        let want = "0xade3b99969cfb5938fc97a17b9cd24f8";
        for c in ["0bobLD1OX2BxgpOktcbX6PkA==", "0BobLD1OX2BxgpOktcbX6PkA==", "0XA1B2C3D4E5F60718293A4B5C6D7E8F90"] {
            let mut init = one_way(vec![ChapAlgorithm::Md5]);
            let out = init.respond(&kv(&[("CHAP_A", "5"), ("CHAP_I", "42"), ("CHAP_C", c)])).unwrap();
            assert_eq!(get(&out, "CHAP_R"), want, "{c}");
        }
    }

    #[test]
    fn algorithm_must_be_one_we_offered() {
        let mut c = one_way(vec![ChapAlgorithm::Md5]);
        for a in ["7", "5,7", "4", "x", "", "+5", "05x"] {
            assert_eq!(c.respond(&challenge(a)), Err(ChapError::AlgorithmNotOffered(a.into())), "{a}");
        }
        let mut c = one_way(vec![ChapAlgorithm::Sha1, ChapAlgorithm::Md5]);
        assert!(c.respond(&challenge("6")).is_ok());
    }

    #[test]
    fn missing_keys() {
        let mut c = one_way(vec![ChapAlgorithm::Md5]);
        assert_eq!(c.respond(&kv(&[("CHAP_I", "1"), ("CHAP_C", CHALLENGE)])), Err(ChapError::MissingKey("CHAP_A")));
        assert_eq!(c.respond(&kv(&[("CHAP_A", "5"), ("CHAP_C", CHALLENGE)])), Err(ChapError::MissingKey("CHAP_I")));
        assert_eq!(c.respond(&kv(&[("CHAP_A", "5"), ("CHAP_I", "1")])), Err(ChapError::MissingKey("CHAP_C")));
    }

    #[test]
    fn malformed_identifier() {
        let mut c = one_way(vec![ChapAlgorithm::Md5]);
        for i in ["", "256", "-1", "0x10", "1a", " 1", "1000"] {
            let err = c.respond(&kv(&[("CHAP_A", "5"), ("CHAP_I", i), ("CHAP_C", CHALLENGE)])).unwrap_err();
            assert!(matches!(err, ChapError::Malformed { key: "CHAP_I", .. }), "{i:?}: {err:?}");
        }
        for i in ["0", "255", "007"] {
            assert!(c.respond(&kv(&[("CHAP_A", "5"), ("CHAP_I", i), ("CHAP_C", CHALLENGE)])).is_ok(), "{i}");
        }
    }

    #[test]
    fn malformed_challenge() {
        let too_long = format!("0x{}", "ab".repeat(MAX_CHALLENGE_LEN + 1));
        let longest = format!("0x{}", "ab".repeat(MAX_CHALLENGE_LEN));
        let b64_long = format!("0b{}", "AAAA".repeat(342));
        for bad in
            ["", "0x", "0b", "0xabc", "0xzz", "abcd", "0b!!!!", "0y00", "0x0g", "0b====", too_long.as_str(), &b64_long]
        {
            let mut c = one_way(vec![ChapAlgorithm::Md5]);
            let err = c.respond(&kv(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", bad)])).unwrap_err();
            assert!(matches!(err, ChapError::Malformed { key: "CHAP_C", .. }), "{bad:?}: {err:?}");
        }
        let mut c = one_way(vec![ChapAlgorithm::Md5]);
        assert!(c.respond(&kv(&[("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", &longest)])).is_ok());
    }

    #[test]
    fn duplicate_keys_refused() {
        let mut c = one_way(vec![ChapAlgorithm::Md5]);
        let mut t = challenge("5");
        t.push(("CHAP_C".into(), "0x01".into()));
        assert!(matches!(c.respond(&t), Err(ChapError::Malformed { key: "CHAP_C", .. })));
    }

    #[test]
    fn mutual_sends_our_challenge_and_verifies_target() {
        let mut c = mutual();
        assert!(c.is_mutual());
        let out = c.respond(&challenge("5")).unwrap();
        assert_eq!(get(&out, "CHAP_N"), "muser");
        assert_eq!(get(&out, "CHAP_R"), "0xade3b99969cfb5938fc97a17b9cd24f8");
        let id: u8 = get(&out, "CHAP_I").parse().unwrap();
        let ours = get(&out, "CHAP_C");
        assert_eq!(ours.len(), 2 + 2 * 16);
        assert!(ours.starts_with("0x") && ours[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(ours, CHALLENGE);
        // What an honest target computes.
        let bytes = decode_binary_value("CHAP_C", ours).unwrap();
        let r = ChapAlgorithm::Md5.response(id, &Secret::new("mtargetsecret"), &bytes);
        let answer = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", &encode_binary_value(&r))]);
        assert_eq!(c.verify_target(&answer), Ok(()));
    }

    /// Expected value from Python: hashlib.md5(bytes([200]) +
    /// b"mtargetsecret" + bytes(range(16, 32))).hexdigest().
    #[test]
    fn mutual_target_response_vector() {
        let mut c = mutual();
        let ours: Vec<u8> = (16..32).collect();
        let out = c.respond_with(&challenge("5"), 200, ours).unwrap();
        assert_eq!(get(&out, "CHAP_I"), "200");
        assert_eq!(get(&out, "CHAP_C"), "0x101112131415161718191a1b1c1d1e1f");
        let good = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", "0xe06b9c8caff689b04d48242a16c711ad")]);
        assert_eq!(c.verify_target(&good), Ok(()));
        // The same in base64.
        let good64 = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", "0b4GucjK/2ibBNSCQqFscRrQ==")]);
        assert_eq!(c.verify_target(&good64), Ok(()));
    }

    #[test]
    fn wrong_target_response_refused() {
        let mut c = mutual();
        c.respond_with(&challenge("5"), 200, (16..32).collect()).unwrap();
        let wrong = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", "0xe06b9c8caff689b04d48242a16c711ae")]);
        assert_eq!(c.verify_target(&wrong), Err(ChapError::WrongTargetResponse));
        let short = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", "0xe06b9c8c")]);
        assert_eq!(c.verify_target(&short), Err(ChapError::WrongTargetResponse));
        let garbage = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", "yes")]);
        assert!(matches!(c.verify_target(&garbage), Err(ChapError::Malformed { key: "CHAP_R", .. })));
        assert_eq!(c.verify_target(&kv(&[("CHAP_N", "mtarget")])), Err(ChapError::MissingKey("CHAP_R")));
    }

    #[test]
    fn wrong_target_name_refused() {
        let mut c = mutual();
        c.respond_with(&challenge("5"), 200, (16..32).collect()).unwrap();
        let wrong = kv(&[("CHAP_N", "impostor"), ("CHAP_R", "0xe06b9c8caff689b04d48242a16c711ad")]);
        assert_eq!(c.verify_target(&wrong), Err(ChapError::WrongTargetName("impostor".into())));
        assert_eq!(
            c.verify_target(&kv(&[("CHAP_R", "0xe06b9c8caff689b04d48242a16c711ad")])),
            Err(ChapError::MissingKey("CHAP_N"))
        );
    }

    #[test]
    fn reflected_challenge_refused() {
        let mut c = mutual();
        let same = decode_binary_value("CHAP_C", CHALLENGE).unwrap();
        c.respond_with(&challenge("5"), 42, same.clone()).unwrap();
        // Even a response that would be right is refused.
        let r = ChapAlgorithm::Md5.response(42, &Secret::new("mtargetsecret"), &same);
        let answer = kv(&[("CHAP_N", "mtarget"), ("CHAP_R", &encode_binary_value(&r))]);
        assert_eq!(c.verify_target(&answer), Err(ChapError::ReflectedChallenge));
    }

    #[test]
    fn same_secret_both_ways_refused() {
        let mut c = ChapInitiator::new(
            ChapConfig::new("muser", Secret::new("samesecret12")).with_target("mtarget", Secret::new("samesecret12")),
        );
        assert_eq!(c.respond(&challenge("5")), Err(ChapError::SameSecretBothWays));
    }

    #[test]
    fn verify_before_respond() {
        let c = mutual();
        assert_eq!(c.verify_target(&TextPairs::new()), Err(ChapError::NoChallengeSent));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let config = ChapConfig::new("labuser", Secret::new("labsecret123"))
            .with_target("mtarget", Secret::new("mtargetsecret"));
        let shown = format!("{config:?} {:?}", ChapInitiator::new(config.clone()));
        assert!(!shown.contains("labsecret123") && !shown.contains("mtargetsecret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(<redacted>)");
    }

    #[test]
    fn binary_value_round_trip() {
        let bytes = [0u8, 1, 0xfe, 0xff];
        assert_eq!(encode_binary_value(&bytes), "0x0001feff");
        assert_eq!(decode_binary_value("CHAP_R", "0x0001FEff").unwrap(), bytes);
        assert_eq!(decode_binary_value("CHAP_R", "0bAAH+/w==").unwrap(), bytes);
    }
}
