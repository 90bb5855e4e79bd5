//! Command-line syntax. The forms are fixed: scripts depend on them.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Parses the command line. `--help` and `--version` print and exit; a usage
/// error comes back as one line (clap's own report spans several lines).
pub fn parse() -> Result<Cli, String> {
    match Cli::try_parse() {
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

#[derive(Debug, Parser)]
#[command(name = "rsiscsi", version, about = "Userspace iSCSI initiator")]
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
    },
    /// List each target of a portal with its LUNs, sizes, vendor and product.
    Ls {
        /// iscsi://HOST[:PORT]/
        url: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        mcs: McsArgs,
    },
    /// Show INQUIRY data and device identifiers of a LUN.
    Inquiry {
        /// iscsi://HOST[:PORT]/IQN/LUN
        url: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        mcs: McsArgs,
    },
    /// Show the capacity of a LUN: blocks, block size, bytes.
    Capacity {
        /// iscsi://HOST[:PORT]/IQN/LUN
        url: String,
        #[arg(long)]
        json: bool,
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
    },
    /// Measure bandwidth, IOPS, CPU per GiB and latency percentiles on a LUN (overwrites it with --rw write).
    Bench(crate::bench::BenchArgs),
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
}

impl Default for McsArgs {
    fn default() -> Self {
        Self { connections: 1, policy: iscsi_initiator::model::LoadBalancePolicy::RoundRobin }
    }
}

pub(crate) fn parse_policy(s: &str) -> Result<iscsi_initiator::model::LoadBalancePolicy, String> {
    s.parse().map_err(|e: iscsi_initiator::model::Status| e.message)
}
