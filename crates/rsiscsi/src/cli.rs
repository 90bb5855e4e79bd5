//! Command-line syntax. The forms are fixed: scripts depend on them.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Parses the command line. `--help` and `--version` print and exit; a usage
/// error comes back as one line (clap's own report spans several lines).
pub fn parse() -> Result<Cli, String> {
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        cli.common.given = Given {
            header_digest: on_command_line(&m, "header_digest"),
            data_digest: on_command_line(&m, "data_digest"),
        };
        Ok(cli)
    });
    match parsed {
        Ok(cli) => Ok(cli),
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => err.exit(),
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        Err(err) => {
            // The first paragraph of clap's report, joined into one line.
            let text = err.render().to_string();
            let para: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let joined = para.join(" ");
            let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
            let msg = if msg.is_empty() { "invalid command line" } else { msg };
            Err(format!("{msg} (see rsiscsi --help)"))
        }
    }
}

/// Whether a global option was typed on the command line (at any level),
/// as opposed to taking its default.
fn on_command_line(m: &ArgMatches, id: &str) -> bool {
    let mut level = Some(m);
    while let Some(l) = level {
        if l.value_source(id) == Some(ValueSource::CommandLine) {
            return true;
        }
        level = l.subcommand().map(|(_, sub)| sub);
    }
    false
}

/// Options given explicitly, for the service commands: an option the user
/// typed is sent (and sets its InformationSpecified bit); a default is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    pub header_digest: bool,
    pub data_digest: bool,
}

/// The exit statuses, shown at the end of `rsiscsi --help` (the numbers are
/// `crate::commands::exit_status` and `crate::service::EXIT_*`).
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  any other failure (a SCSI error, a local file error, ...)
  2  usage error: the command line was refused
  3  service commands: rsiscsid is not running
  4  authentication failed (CHAP, or the target does not authorize this initiator)
  5  the target refused the login or the command, or broke the iSCSI protocol
     (also when recovery gave up because it did the same on a reinstated connection)
  6  the target is unreachable or did not answer in time (also when recovery gave up
     on a connection that kept being cut or went silent, or a command window that
     stayed closed, for the --hold-time)";

#[derive(Debug, Parser)]
#[command(name = "rsiscsi", version, about = "Userspace iSCSI initiator", after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DigestArg {
    None,
    Crc32c,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Our iSCSI node name (default: a generated name kept in the config file).
    #[arg(long, global = true, value_name = "IQN")]
    pub initiator_name: Option<String>,
    /// Header digest to ask for.
    #[arg(long, global = true, value_enum, default_value = "none")]
    pub header_digest: DigestArg,
    /// Data digest to ask for.
    #[arg(long, global = true, value_enum, default_value = "none")]
    pub data_digest: DigestArg,
    /// CHAP user name; the secret comes from RSISCSI_CHAP_SECRET or --chap-secret-file.
    #[arg(long, global = true, value_name = "NAME")]
    pub chap_user: Option<String>,
    /// File holding the CHAP secret.
    #[arg(long, global = true, value_name = "FILE")]
    pub chap_secret_file: Option<PathBuf>,
    /// Mutual CHAP: the name the target must answer with; its secret comes from
    /// RSISCSI_TARGET_CHAP_SECRET or --target-chap-secret-file.
    #[arg(long, global = true, value_name = "NAME")]
    pub target_chap_user: Option<String>,
    /// File holding the target's mutual CHAP secret.
    #[arg(long, global = true, value_name = "FILE")]
    pub target_chap_secret_file: Option<PathBuf>,
    /// The rsiscsid socket (service commands); else RSISCSI_SOCKET, else the runtime-dir default.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Which of the options above were typed (not defaults).
    #[arg(skip)]
    pub given: Given,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the targets a portal offers (SendTargets): one `HOST:PORT,TPGT IQN` line per portal.
    Discover {
        /// HOST[:PORT] of the portal.
        portal: String,
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// List each target of a portal with its LUNs, sizes, vendor and product.
    Ls {
        /// iscsi://HOST[:PORT]/
        url: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        mcs: McsArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Show INQUIRY data and device identifiers of a LUN.
    Inquiry {
        /// iscsi://HOST[:PORT]/IQN/LUN
        url: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        mcs: McsArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Show the capacity of a LUN: blocks, block size, bytes.
    Capacity {
        /// iscsi://HOST[:PORT]/IQN/LUN
        url: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Copy between local files and LUNs (each side a path or iscsi://HOST[:PORT]/IQN/LUN).
    Cp {
        src: String,
        dst: String,
        /// Byte offset in the LUN(s) where the range starts (a multiple of the block size).
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        offset: u64,
        /// Bytes to copy (default: the whole file, or the LUN from --offset to its end).
        #[arg(long, value_name = "BYTES")]
        length: Option<u64>,
        #[command(flatten)]
        mcs: McsArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Measure bandwidth, IOPS, CPU per GiB and latency percentiles on a LUN (overwrites it with --rw write).
    Bench(crate::bench::BenchArgs),
    /// Service: the send-target portals rsiscsid discovers targets on (add, remove, list).
    Portal {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: PortalCmd,
    },
    /// Service: discovered targets (refresh, list) and logging in to one (login).
    Target {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: TargetCmd,
    },
    /// Service: the sessions rsiscsid holds (list, add-connection, remove-connection, logout, policy, scsi).
    Session {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: SessionCmd,
    },
    /// Service: the initiator's identity (show, set) and its own CHAP secret (chap-secret).
    Initiator {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: InitiatorCmd,
    },
    /// Service: logins rsiscsid restores at every start (list, remove).
    Persistent {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: PersistentCmd,
    },
}

/// Output choice shared by the service commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct ServiceOut {
    /// Print the service's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Where and how a connection is made (Windows `AddIScsiConnection` /
/// `LoginIScsiTarget` parameters); CHAP and digests come from the global options.
#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// Local network interface index to use (absent: any).
    #[arg(long, value_name = "N")]
    pub initiator_port: Option<u32>,
    /// ISCSI_SECURITY_FLAG_* bits in hex (e.g. 0x41).
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u64)]
    pub security_flags: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PortalCmd {
    /// Add a send-target portal; the service runs SendTargets on it at once.
    Add {
        /// HOST[:PORT] (port 3260 by default).
        portal: String,
        /// Keep the portal even if SendTargets on it fails (the exit status is still 1).
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        path: PathArgs,
    },
    /// Remove a send-target portal (targets found through it stay until the next refresh).
    Remove {
        /// HOST[:PORT].
        portal: String,
    },
    /// List the send-target portals.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TargetCmd {
    /// Run SendTargets on every portal again.
    Refresh,
    /// List the discovered targets.
    List,
    /// Log in to a target; prints the session id and the connection ids.
    Login {
        /// The target's iSCSI name.
        target: String,
        /// HOST[:PORT] to log in through (default: the first portal the target was discovered at).
        #[arg(long, value_name = "HOST[:PORT]")]
        portal: Option<String>,
        /// Also store the login so the service logs in again at every start.
        #[arg(long)]
        persistent: bool,
        /// TCP connections in the session (MC/S).
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        connections: u32,
        /// failover-only, round-robin, round-robin-subset, least-queue-depth or weighted.
        #[arg(long, value_name = "POLICY", value_parser = parse_policy)]
        policy: Option<iscsi_initiator::model::LoadBalancePolicy>,
        /// Seconds a command may be held while its connection is recovered before it fails
        /// (Windows' MaxRequestHoldTime; 1 to 3600; default: the service's, 60).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=3600))]
        hold_time: Option<u32>,
        /// Seconds a lost connection may stay down before the commands waiting for it fail
        /// (Windows' LinkDownTime; 1 to 3600; default: the service's, 15).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=3600))]
        link_down_time: Option<u32>,
        #[command(flatten)]
        path: PathArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// List the sessions with their connections and LUNs.
    List,
    /// Add a TCP connection to a session; prints its connection id.
    AddConnection {
        /// Session id (as `session list` shows it).
        session: String,
        /// HOST[:PORT] of the target portal to connect to.
        #[arg(long, value_name = "HOST[:PORT]")]
        portal: String,
        #[command(flatten)]
        path: PathArgs,
    },
    /// Log out one connection of a session (not the last one).
    RemoveConnection { session: String, connection: String },
    /// Log the whole session out (a persistent login stays stored).
    Logout { session: String },
    /// Set how commands are spread over the session's connections.
    Policy {
        session: String,
        /// failover-only, round-robin, round-robin-subset, least-queue-depth or weighted.
        #[arg(value_parser = parse_policy)]
        policy: iscsi_initiator::model::LoadBalancePolicy,
    },
    /// Send one SCSI command (CDB in hex, spaces allowed) and show status, sense and data.
    Scsi {
        /// Session id.
        session: String,
        /// Logical unit number.
        lun: u64,
        /// The CDB in hex: `120000006000` or `12 00 00 00 60 00` (1 to 16 bytes).
        #[arg(value_name = "CDB-HEX", required = true, num_args = 1..)]
        cdb: Vec<String>,
        /// Expect up to N bytes of Data-In.
        #[arg(long, value_name = "N", conflicts_with = "data_out")]
        data_in: Option<u32>,
        /// Send the bytes of FILE as Data-Out.
        #[arg(long, value_name = "FILE")]
        data_out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum InitiatorCmd {
    /// Show the node name and alias the service logs in with, and whether its CHAP secret is set.
    Show,
    /// Change the node name (an iqn., eui. or naa. name) or the alias; new logins use them.
    Set {
        #[arg(long, value_name = "IQN")]
        name: Option<String>,
        #[arg(long, value_name = "TEXT")]
        alias: Option<String>,
    },
    /// Set the initiator's own CHAP secret (mutual CHAP checks the target with it), read from
    /// RSISCSI_INITIATOR_CHAP_SECRET or a private file; 12 to 16 bytes, as Windows requires.
    ChapSecret {
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PersistentCmd {
    /// List the persistent logins and their state.
    List,
    /// Forget a persistent login (a live session stays logged in).
    Remove {
        /// The target's iSCSI name.
        target: String,
        /// HOST[:PORT] of the login to remove (default: every persistent login of the target).
        #[arg(long, value_name = "HOST[:PORT]")]
        portal: Option<String>,
    },
}

/// A hexadecimal number, with or without `0x`.
fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(digits, 16).map_err(|_| format!("{s:?} is not a hexadecimal number (e.g. 0x41)"))
}

/// One session over several TCP connections (MC/S).
#[derive(Debug, Clone, Args)]
pub struct McsArgs {
    /// TCP connections in the session: the leading one plus N-1 added with add_connection.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub connections: u16,
    /// How commands are spread over the connections: failover-only, round-robin,
    /// round-robin-subset, least-queue-depth or weighted.
    #[arg(long, default_value = "round-robin", value_name = "POLICY", value_parser = parse_policy)]
    pub policy: iscsi_initiator::model::LoadBalancePolicy,
    /// HOST[:PORT] of a portal of the same target for the added connections, taken in
    /// turn (repeat it, one per path or NIC); default: the URL's portal.
    #[arg(long = "add-portal", value_name = "HOST[:PORT]", value_parser = parse_portal)]
    pub add_portals: Vec<iscsi_initiator::PortalAddr>,
}

impl Default for McsArgs {
    fn default() -> Self {
        Self { connections: 1, policy: iscsi_initiator::model::LoadBalancePolicy::RoundRobin, add_portals: Vec::new() }
    }
}

/// The longest `--hold-time` taken: beyond an hour a one-shot command that
/// cannot make progress is better ended and run again.
pub const MAX_HOLD_SECS: u64 = 3600;

/// What a one-shot command's session is given beyond the global options:
/// how long it waits for recovery (RFC 7143 §6.2, §7.1.4) before it gives up
/// with the fault that started it (the service keeps its own, longer
/// budget), and the PDU size it declares.
#[derive(Debug, Clone, Copy, Args)]
pub struct SessionArgs {
    /// How long a command is held and retried while a failed connection is recovered; a fault
    /// that repeats on a reinstated connection fails at once (1 to 3600 seconds).
    #[arg(
        long,
        default_value_t = 15,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_HOLD_SECS)
    )]
    pub hold_time: u64,
    /// The largest data segment the target may send in one PDU (MaxRecvDataSegmentLength,
    /// RFC 7143 §13.12): 512 bytes to 16M-1, with an optional k/M suffix [default: 1M].
    #[arg(long, value_name = "SIZE", value_parser = parse_segment_length)]
    pub max_recv_data_segment_length: Option<u32>,
}

impl Default for SessionArgs {
    fn default() -> Self {
        Self { hold_time: 15, max_recv_data_segment_length: None }
    }
}

/// A MaxRecvDataSegmentLength: 512 to 2^24-1 (RFC 7143 §13.12).
fn parse_segment_length(s: &str) -> Result<u32, String> {
    const MAX: u64 = (1 << 24) - 1;
    let n = crate::bench::parse_size(s)?;
    match u32::try_from(n) {
        Ok(v) if (512..=MAX).contains(&n) => Ok(v),
        _ => Err(format!("{n} is not in 512..={MAX} (RFC 7143 §13.12)")),
    }
}

/// `HOST[:PORT]` (port 3260 when left out), as the portals of `--add-portal`.
pub(crate) fn parse_portal(s: &str) -> Result<iscsi_initiator::PortalAddr, String> {
    iscsi_initiator::PortalAddr::parse(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_policy(s: &str) -> Result<iscsi_initiator::model::LoadBalancePolicy, String> {
    s.parse().map_err(|e: iscsi_initiator::model::Status| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(args: &[&str]) -> Given {
        let m = Cli::command().try_get_matches_from(args).unwrap();
        Given { header_digest: on_command_line(&m, "header_digest"), data_digest: on_command_line(&m, "data_digest") }
    }

    #[test]
    fn typed_digests_are_told_from_defaults() {
        let g = given(&["rsiscsi", "session", "add-connection", "1-2", "--portal", "h", "--header-digest", "none"]);
        assert_eq!(g, Given { header_digest: true, data_digest: false });
        let g = given(&["rsiscsi", "--data-digest", "crc32c", "target", "login", "iqn.x:y"]);
        assert_eq!(g, Given { header_digest: false, data_digest: true });
        assert_eq!(given(&["rsiscsi", "target", "list"]), Given::default());
    }

    #[test]
    fn hold_time_is_on_every_one_shot_command_only() {
        let hold = |args: &[&str]| -> Result<u64, ErrorKind> {
            let cli = Cli::try_parse_from(args).map_err(|e| e.kind())?;
            Ok(match &cli.command {
                Command::Discover { session, .. }
                | Command::Ls { session, .. }
                | Command::Inquiry { session, .. }
                | Command::Capacity { session, .. }
                | Command::Cp { session, .. } => session.hold_time,
                Command::Bench(b) => b.session.hold_time,
                _ => 0,
            })
        };
        let url = "iscsi://h/iqn.2024-01.x:y/0";
        assert_eq!(hold(&["rsiscsi", "discover", "h"]), Ok(15));
        assert_eq!(hold(&["rsiscsi", "discover", "--hold-time", "3", "h"]), Ok(3));
        assert_eq!(hold(&["rsiscsi", "ls", "--hold-time", "4", "iscsi://h/"]), Ok(4));
        assert_eq!(hold(&["rsiscsi", "inquiry", "--hold-time", "5", url]), Ok(5));
        assert_eq!(hold(&["rsiscsi", "capacity", "--hold-time", "6", url]), Ok(6));
        assert_eq!(hold(&["rsiscsi", "cp", "--hold-time", "3600", url, "f"]), Ok(3600));
        assert_eq!(hold(&["rsiscsi", "bench", "--hold-time", "1", url]), Ok(1));
        for bad in ["0", "3601", "-1", "1.5", "x", "18446744073709551616"] {
            let r = hold(&["rsiscsi", "cp", "--hold-time", bad, url, "f"]);
            assert!(r.is_err_and(|k| k != ErrorKind::DisplayHelp), "--hold-time {bad}: {r:?}");
        }
        assert!(hold(&["rsiscsi", "target", "list", "--hold-time", "5"]).is_err());
        assert_eq!(parse_segment_length("256k"), Ok(262_144));
        assert_eq!(parse_segment_length("512"), Ok(512));
        assert_eq!(parse_segment_length("16777215"), Ok(16_777_215));
        for bad in ["511", "16M", "0", "1x", "99999999999T"] {
            assert!(parse_segment_length(bad).is_err(), "{bad}");
        }
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let has = sub.get_arguments().any(|a| a.get_id() == "hold_time");
            let one_shot = ["discover", "ls", "inquiry", "capacity", "cp", "bench"].contains(&sub.get_name());
            assert_eq!(has, one_shot, "{}", sub.get_name());
        }
    }

    #[test]
    fn security_flags_are_hex() {
        assert_eq!(parse_hex_u64("0x41"), Ok(0x41));
        assert_eq!(parse_hex_u64("41"), Ok(0x41));
        assert_eq!(parse_hex_u64("0XfF"), Ok(0xff));
        assert_eq!(parse_hex_u64("0x"), Err("\"0x\" is not a hexadecimal number (e.g. 0x41)".into()));
        assert!(parse_hex_u64("-1").is_err());
        assert!(parse_hex_u64("0x1_0000_0000_0000_0000").is_err());
    }
}
