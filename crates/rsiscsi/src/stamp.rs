//! The content `bench --verify` writes and checks: every 512-byte sector
//! carries a stamp (a magic, the seed, its sector number) and then bytes
//! derived from seed and sector number alone. The content of a sector
//! therefore does not depend on which command wrote it or when: two
//! writes of the same place race harmlessly, a read checks any sector
//! without a record of what was written, and data written at the wrong
//! place, with another seed, or never, is told apart in the message.

use std::fmt;

/// The unit a stamp covers (the smallest logical block size, SBC-4).
pub const SECTOR: usize = 512;
/// What starts every stamped sector.
pub const MAGIC: [u8; 8] = *b"RSISCSIv";
/// Bytes of the header: magic, seed, sector number.
const HEADER: usize = 24;

/// splitmix64's step: a fast generator whose words differ from one
/// sector to the next even for neighbouring seeds.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The generator state of a sector's body.
fn body_start(seed: u64, sector: u64) -> u64 {
    mix(seed ^ sector.wrapping_mul(GOLDEN))
}

/// Writes the stamp of sector `sector` into `s` (512 bytes).
fn stamp_sector(s: &mut [u8], seed: u64, sector: u64) {
    let (head, body) = s.split_at_mut(HEADER.min(s.len()));
    for (dst, src) in head.iter_mut().zip(MAGIC.iter().chain(&seed.to_le_bytes()).chain(&sector.to_le_bytes())) {
        *dst = *src;
    }
    let mut x = body_start(seed, sector);
    for w in body.chunks_exact_mut(8) {
        x = x.wrapping_add(GOLDEN);
        w.copy_from_slice(&mix(x).to_le_bytes());
    }
}

/// Fills `buf` with the stamps of the sectors from `first_sector` on
/// (`buf.len()` a multiple of 512; a shorter tail is left as it is).
pub fn fill(buf: &mut [u8], seed: u64, first_sector: u64) {
    for (i, s) in buf.chunks_exact_mut(SECTOR).enumerate() {
        stamp_sector(s, seed, first_sector.wrapping_add(i as u64));
    }
}

/// How one sector differs from its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No stamp at all: never written by `bench --verify` (or overwritten).
    NoStamp { first_bytes: [u8; 8] },
    /// Stamped with another seed.
    Seed { found: u64 },
    /// The stamp of another sector: data landed in the wrong place.
    Misplaced { found: u64 },
    /// The stamp is right but a byte of the body is not.
    Byte { offset: usize, found: u8, expected: u8 },
}

/// A sector that failed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSector {
    /// Its number, in 512-byte units from the start of the LUN.
    pub sector: u64,
    pub what: Mismatch,
}

impl BadSector {
    /// The line that reports it, with the LBA in the LUN's blocks.
    pub fn describe(&self, block_size: u32, seed: u64) -> String {
        let bytes = self.sector.saturating_mul(SECTOR as u64);
        let lba = bytes / u64::from(block_size.max(1));
        let at = if u64::from(block_size) == SECTOR as u64 {
            format!("LBA {lba}")
        } else {
            format!("LBA {lba} (512-byte sector {} of it)", (bytes % u64::from(block_size.max(1))) / SECTOR as u64)
        };
        match &self.what {
            Mismatch::NoStamp { first_bytes } => format!(
                "{at}: no --verify stamp (starts {}): not written by `bench --rw write --verify`, or overwritten",
                hex::encode(first_bytes)
            ),
            Mismatch::Seed { found } => format!("{at}: written with --seed {found}, expected --seed {seed}"),
            Mismatch::Misplaced { found } => {
                format!("{at}: holds the data of 512-byte sector {found}, expected sector {}", self.sector)
            }
            Mismatch::Byte { offset, found, expected } => {
                format!("{at}: byte {offset} of the sector is 0x{found:02x}, expected 0x{expected:02x}")
            }
        }
    }
}

impl fmt::Display for BadSector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sector {}: {:?}", self.sector, self.what)
    }
}

fn word(s: &[u8], at: usize) -> Option<u64> {
    s.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

/// Checks one sector against its stamp.
fn check_sector(s: &[u8], seed: u64, sector: u64) -> Result<(), Mismatch> {
    let head: [u8; 8] = s.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default();
    if head != MAGIC {
        return Err(Mismatch::NoStamp { first_bytes: head });
    }
    let found_seed = word(s, 8).unwrap_or_default();
    if found_seed != seed {
        return Err(Mismatch::Seed { found: found_seed });
    }
    let found_sector = word(s, 16).unwrap_or_default();
    if found_sector != sector {
        return Err(Mismatch::Misplaced { found: found_sector });
    }
    let mut x = body_start(seed, sector);
    let body = s.get(HEADER..).unwrap_or_default();
    for (i, w) in body.chunks_exact(8).enumerate() {
        x = x.wrapping_add(GOLDEN);
        let want = mix(x).to_le_bytes();
        if w != want {
            // The first byte that differs, for the message.
            let (k, (f, e)) = w.iter().zip(want).enumerate().find(|(_, (f, e))| **f != *e).unwrap_or((0, (&0, 0)));
            return Err(Mismatch::Byte { offset: HEADER + i * 8 + k, found: *f, expected: e });
        }
    }
    Ok(())
}

/// Checks `buf`, read from sector `first_sector` on, against the stamps;
/// returns the sectors that differ (at most `keep` of them described)
/// and how many differ in all.
pub fn check(buf: &[u8], seed: u64, first_sector: u64, keep: usize) -> (Vec<BadSector>, u64) {
    let mut bad = Vec::new();
    let mut n = 0u64;
    for (i, s) in buf.chunks_exact(SECTOR).enumerate() {
        let sector = first_sector.wrapping_add(i as u64);
        if let Err(what) = check_sector(s, seed, sector) {
            n += 1;
            if bad.len() < keep {
                bad.push(BadSector { sector, what });
            }
        }
    }
    (bad, n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn stamped(sectors: usize, seed: u64, first: u64) -> Vec<u8> {
        let mut v = vec![0u8; sectors * SECTOR];
        fill(&mut v, seed, first);
        v
    }

    #[test]
    fn stamps_check_where_they_were_written() {
        let v = stamped(8, 7, 100);
        assert_eq!(check(&v, 7, 100, 4), (vec![], 0));
        assert_eq!(&v[..8], b"RSISCSIv");
        assert_eq!(u64::from_le_bytes(v[8..16].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(v[512 + 16..512 + 24].try_into().unwrap()), 101);
        // Neighbouring sectors and seeds do not share a body.
        assert_ne!(v[24..512], v[512 + 24..1024]);
        assert_ne!(stamped(1, 8, 100)[24..], v[24..512]);
    }

    #[test]
    fn each_kind_of_difference_is_named() {
        let v = stamped(4, 7, 10);
        // Another seed.
        let (bad, n) = check(&v, 8, 10, 10);
        assert_eq!((n, &bad[0].what), (4, &Mismatch::Seed { found: 7 }));
        assert_eq!(bad[0].describe(512, 8), "LBA 10: written with --seed 7, expected --seed 8");
        // The right data read from the wrong place.
        let (bad, n) = check(&v, 7, 11, 10);
        assert_eq!((n, &bad[0].what), (4, &Mismatch::Misplaced { found: 10 }));
        // Never written.
        let zeros = vec![0u8; 2 * SECTOR];
        let (bad, n) = check(&zeros, 7, 0, 1);
        assert_eq!((n, bad.len()), (2, 1));
        assert!(bad[0].describe(512, 7).contains("no --verify stamp (starts 0000000000000000)"));
        // One byte flipped in the body of the third sector.
        let mut w = v.clone();
        w[2 * SECTOR + 300] ^= 0x40;
        let (bad, n) = check(&w, 7, 10, 10);
        assert_eq!(n, 1);
        assert_eq!(bad[0].sector, 12);
        let Mismatch::Byte { offset, found, expected } = bad[0].what else { panic!("{:?}", bad[0]) };
        assert_eq!((offset, found ^ expected), (300, 0x40));
        // A 4096-byte block: the LBA and the sector within it.
        assert!(bad[0].describe(4096, 7).starts_with("LBA 1 (512-byte sector 4 of it): byte 300"));
    }
}
