//! Text output of the service commands: aligned tables, hex dumps, decoded
//! SCSI status and sense.

use std::fmt::Write as _;

use iscsi_proto::scsi::sense::{ScsiStatus, Sense};

/// A table printed with columns padded to their widest cell, two spaces
/// apart; the last column is not padded (no trailing blanks).
pub struct Table {
    indent: &'static str,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { indent: "", rows: vec![header.iter().map(|h| (*h).to_string()).collect()] }
    }

    /// The same table, each line starting with `indent`.
    pub fn indented(mut self, indent: &'static str) -> Self {
        self.indent = indent;
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::from(self.indent);
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let w = widths.get(i).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `0x0000000000000041` style for flags; `-` for zero reads better in a table.
pub fn flags(v: u64) -> String {
    if v == 0 { "-".into() } else { format!("0x{v:X}") }
}

/// `-` for an empty or absent cell.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "-".into(),
    }
}

/// An address and port as `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// SAM-5 §5.3: the status byte by name, e.g. `GOOD (0x00)`.
pub fn scsi_status(status: u8) -> String {
    let name = match ScsiStatus::from_u8(status) {
        ScsiStatus::Good => "GOOD",
        ScsiStatus::CheckCondition => "CHECK CONDITION",
        ScsiStatus::ConditionMet => "CONDITION MET",
        ScsiStatus::Busy => "BUSY",
        ScsiStatus::ReservationConflict => "RESERVATION CONFLICT",
        ScsiStatus::TaskSetFull => "TASK SET FULL",
        ScsiStatus::AcaActive => "ACA ACTIVE",
        ScsiStatus::TaskAborted => "TASK ABORTED",
        ScsiStatus::Other(_) => "reserved",
    };
    format!("{name} (0x{status:02X})")
}

/// SPC-4 §4.5: sense data in words: key, ASC/ASCQ and their meaning, the
/// INFORMATION field when valid; undecodable sense is said to be so.
pub fn sense(bytes: &[u8]) -> String {
    match Sense::parse(bytes) {
        Ok(s) => {
            let mut t = format!(
                "{} (key 0x{:X}), ASC 0x{:02X} ASCQ 0x{:02X}: {}",
                s.key.name(),
                s.key.as_u8(),
                s.asc,
                s.ascq,
                s.description()
            );
            if let Some(info) = s.information {
                let _ = write!(t, ", information 0x{info:X}");
            }
            if s.is_deferred() {
                t.push_str(" (deferred error)");
            }
            t
        }
        Err(e) => format!("cannot decode {} byte(s) of sense data: {e}", bytes.len()),
    }
}

/// The classic 16-bytes-a-line dump: offset, hex in two groups of eight, ASCII.
pub fn hexdump(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let _ = write!(out, "{:08x} ", i * 16);
        for j in 0..16 {
            if j == 8 {
                out.push(' ');
            }
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        out.extend(chunk.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }));
        out.push_str("|\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up_without_trailing_blanks() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["xxxx".into(), "y".into(), "z".into()]);
        assert_eq!(t.render(), "A     LONGER  C\nxxxx  y       z\n");
        assert_eq!(Table::new(&["A", ""]).indented("  ").render(), "  A\n");
    }

    #[test]
    fn hexdump_lines_have_offset_hex_and_ascii() {
        let d = hexdump(b"IET     VIRTUAL-DISK\x00");
        assert_eq!(
            d,
            "00000000  49 45 54 20 20 20 20 20  56 49 52 54 55 41 4c 2d  |IET     VIRTUAL-|\n\
             00000010  44 49 53 4b 00                                    |DISK.|\n"
        );
        assert_eq!(hexdump(&[]), "");
    }

    #[test]
    fn status_and_sense_are_decoded() {
        assert_eq!(scsi_status(0), "GOOD (0x00)");
        assert_eq!(scsi_status(2), "CHECK CONDITION (0x02)");
        // Fixed format, ILLEGAL REQUEST, ASC 0x20 (invalid command operation code).
        let s = [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0];
        let text = sense(&s);
        assert!(text.starts_with("ILLEGAL REQUEST (key 0x5), ASC 0x20 ASCQ 0x00: "), "{text}");
        assert!(sense(&[0x10]).starts_with("cannot decode 1 byte(s)"));
    }

    #[test]
    fn ipv6_addresses_get_brackets() {
        assert_eq!(host_port("::1", 3260), "[::1]:3260");
        assert_eq!(host_port("127.0.0.1", 3261), "127.0.0.1:3261");
    }
}
