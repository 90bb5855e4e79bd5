//! Command-line syntax. The forms are fixed: scripts depend on them.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Parses the command line. `--help` and `--version` print and exit; a usage
/// error comes back as one line (clap's own report spans several lines).
pub fn parse() -> Result<Cli, String> {
    match parse_from(std::env::args_os()) {
        Ok(cli) => Ok(cli),
        Err(Refused::Clap(err)) => err.exit(),
        Err(Refused::Usage(msg)) => Err(msg),
    }
}

/// Why [`parse_from`] did not give a command: clap's help or version to
/// print, or a usage error as one line.
#[derive(Debug)]
enum Refused {
    Clap(clap::Error),
    Usage(String),
}

fn parse_from<I, T>(args: I) -> Result<Cli, Refused>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let cmd = Cli::command();
    let parsed = cmd.clone().try_get_matches_from(&args).and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    match parsed {
        Ok((mut cli, m)) => {
            check_before(&cmd, &m)?;
            cli.common = common_of(&m, cli.before.verbose);
            Ok(cli)
        }
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            Err(Refused::Clap(err))
        }
        Err(err) => {
            if err.kind() == ErrorKind::UnknownArgument
                && let Some(clap::error::ContextValue::String(arg)) = err.get(clap::error::ContextKind::InvalidArg)
                && let Some(long) = arg.strip_prefix("--").map(|a| a.split('=').next().unwrap_or(a))
                && CONNECTION_OPTIONS.iter().any(|(_, l)| *l == long)
            {
                return Err(Refused::Usage(not_used(&typed_path(&cmd, &args), long)));
            }
            // The first paragraph of clap's report, joined into one line.
            let text = err.render().to_string();
            let para: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let joined = para.join(" ");
            let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
            let msg = if msg.is_empty() { "invalid command line" } else { msg };
            Err(Refused::Usage(format!("{msg} (see rsiscsi --help)")))
        }
    }
}

/// The options that say where and how to connect, as (id, long name): each
/// command takes those it uses (a one-shot command all but `--socket`, a
/// service command `--socket`, the service commands that log in the digests
/// and CHAP); before the command name, any of them is accepted when the
/// command takes it.
const CONNECTION_OPTIONS: [(&str, &str); 8] = [
    ("initiator_name", "initiator-name"),
    ("header_digest", "header-digest"),
    ("data_digest", "data-digest"),
    ("chap_user", "chap-user"),
    ("chap_secret_file", "chap-secret-file"),
    ("target_chap_user", "target-chap-user"),
    ("target_chap_secret_file", "target-chap-secret-file"),
    ("socket", "socket"),
];

/// Refuses an option typed before the command name that the command does
/// not take (it would be ignored: better said than silently dropped).
fn check_before(cmd: &clap::Command, m: &ArgMatches) -> Result<(), Refused> {
    let mut path = Vec::new();
    let mut level = m.subcommand();
    while let Some((name, sub)) = level {
        path.push(name.to_string());
        level = sub.subcommand();
    }
    let takes = path_commands(cmd, &path);
    for (id, long) in CONNECTION_OPTIONS {
        if m.value_source(id) == Some(ValueSource::CommandLine)
            && !takes.iter().any(|c| c.get_arguments().any(|a| a.get_id() == id))
        {
            return Err(Refused::Usage(not_used(&path, long)));
        }
    }
    Ok(())
}

/// The commands named by `path` under `cmd` (not `cmd` itself).
fn path_commands<'a>(cmd: &'a clap::Command, path: &[String]) -> Vec<&'a clap::Command> {
    let mut out = Vec::new();
    let mut at = cmd;
    for name in path {
        match at.find_subcommand(name) {
            Some(sub) => {
                out.push(sub);
                at = sub;
            }
            None => break,
        }
    }
    out
}

/// The subcommand names in a command line clap refused (for the message).
fn typed_path(cmd: &clap::Command, args: &[std::ffi::OsString]) -> Vec<String> {
    let mut path = Vec::new();
    let mut at = cmd;
    for a in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sub) = at.find_subcommand(a) {
            path.push(sub.get_name().to_string());
            at = sub;
        }
    }
    path
}

/// The one-line refusal of `--long` on the command `path`.
fn not_used(path: &[String], long: &str) -> String {
    let service = path.first().is_some_and(|c| SERVICE_COMMANDS.contains(&c.as_str()));
    match long {
        // The service logs in under its own node name (GET /v1/initiator),
        // the same for every session.
        "initiator-name" if service => {
            "the service logs in with its own initiator name; --initiator-name is for the one-shot commands (see rsiscsi --help)"
                .into()
        }
        "target-chap-user" | "target-chap-secret-file" if service => format!(
            "mutual CHAP through the service uses the initiator's own secret (rsiscsi initiator chap-secret): leave out --{long} (see rsiscsi --help)"
        ),
        _ if path.is_empty() => format!("--{long} needs a command (see rsiscsi --help)"),
        _ => {
            let p = path.join(" ");
            format!("--{long} is not used by `rsiscsi {p}` (its options: rsiscsi {p} --help)")
        }
    }
}

/// The commands that are requests to rsiscsid.
pub const SERVICE_COMMANDS: [&str; 6] = ["portal", "isns", "target", "session", "initiator", "persistent"];

/// The value of `id` typed on the command line, at the deepest level that
/// has it (the command's own option wins over the same one typed before the
/// command name); `None` when it was not typed.
fn typed<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
    let mut found = None;
    let mut level = Some(m);
    while let Some(l) = level {
        if let Ok(Some(v)) = l.try_get_one::<T>(id)
            && l.value_source(id) == Some(ValueSource::CommandLine)
        {
            found = Some(v.clone());
        }
        level = l.subcommand().map(|(_, sub)| sub);
    }
    found
}

/// The connection options of the command that was run, wherever they were
/// typed; an option left out takes the one-shot default (the service
/// commands send only what was typed: [`Given`]).
fn common_of(m: &ArgMatches, verbose: u8) -> Common {
    let header_digest = typed::<DigestArg>(m, "header_digest");
    let data_digest = typed::<DigestArg>(m, "data_digest");
    Common {
        initiator_name: typed(m, "initiator_name"),
        header_digest: header_digest.unwrap_or_default(),
        data_digest: data_digest.unwrap_or_default(),
        chap_user: typed(m, "chap_user"),
        chap_secret_file: typed(m, "chap_secret_file"),
        target_chap_user: typed(m, "target_chap_user"),
        target_chap_secret_file: typed(m, "target_chap_secret_file"),
        socket: typed(m, "socket"),
        given: Given { header_digest: header_digest.is_some(), data_digest: data_digest.is_some() },
        verbose,
    }
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
  1  any other failure (a SCSI error, a local file error, IPsec that could not be set up, ...)
  2  usage error: the command line was refused
  3  service commands: rsiscsid is not running
  4  authentication failed (CHAP, or the target does not authorize this initiator)
  5  the target refused the login or the command, or broke the iSCSI protocol
     (also when recovery gave up because it did the same on a reinstated connection)
  6  the target is unreachable or did not answer in time (also when recovery gave up
     on a connection that kept being cut or went silent, or a command window that
     stayed closed, for the --hold-time)
  130, 143  interrupted by SIGINT (Ctrl-C) or SIGTERM: cp logs out, removes a file it
     created and says how far a LUN was written";

/// What `rsiscsi --help` says before the exit statuses.
const BEFORE_NOTE: &str = "\
A command's options may also be typed before its name, as in
`rsiscsi --chap-user NAME capacity URL` (each command's --help lists them).";

#[derive(Debug, Parser)]
#[command(name = "rsiscsi", version, about = "Userspace iSCSI initiator", after_help = format!("{BEFORE_NOTE}\n\n{EXIT_STATUS_HELP}"))]
pub struct Cli {
    /// The connection options of the command that was run, wherever they
    /// were typed (filled by [`parse`]).
    #[arg(skip)]
    pub common: Common,
    #[command(flatten)]
    before: Before,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DigestArg {
    #[default]
    None,
    Crc32c,
}

/// The connection options as the commands use them: those of the command
/// that was run ([`LoginArgs`] of a one-shot command, [`ServiceLoginArgs`]
/// and `--socket` of a service command), wherever they were typed; what a
/// command does not take is `None` (and the digests `none`, not given).
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub initiator_name: Option<String>,
    pub header_digest: DigestArg,
    pub data_digest: DigestArg,
    pub chap_user: Option<String>,
    pub chap_secret_file: Option<PathBuf>,
    pub target_chap_user: Option<String>,
    pub target_chap_secret_file: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Which digests were typed (not defaults).
    pub given: Given,
    pub verbose: u8,
}

/// The connection options typed before the command name (`rsiscsi
/// --chap-user NAME capacity URL`), a form scripts use: not listed in
/// `rsiscsi --help` but in each command's, and refused by [`check_before`]
/// for a command that does not take them.
#[derive(Debug, Args)]
struct Before {
    #[arg(long, hide = true, value_name = "IQN")]
    initiator_name: Option<String>,
    #[arg(long, hide = true, value_enum, value_name = "DIGEST")]
    header_digest: Option<DigestArg>,
    #[arg(long, hide = true, value_enum, value_name = "DIGEST")]
    data_digest: Option<DigestArg>,
    #[arg(long, hide = true, value_name = "NAME")]
    chap_user: Option<String>,
    #[arg(long, hide = true, value_name = "FILE")]
    chap_secret_file: Option<PathBuf>,
    #[arg(long, hide = true, value_name = "NAME")]
    target_chap_user: Option<String>,
    #[arg(long, hide = true, value_name = "FILE")]
    target_chap_secret_file: Option<PathBuf>,
    #[arg(long, hide = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The help heading of the options of a login.
const LOGIN_HEADING: &str = "Login options";

/// How a one-shot command logs in: our name, the digests, CHAP.
#[derive(Debug, Clone, Default, Args)]
pub struct LoginArgs {
    /// Our iSCSI node name (default: a generated name kept in the config file).
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "IQN")]
    pub initiator_name: Option<String>,
    /// Header digest to ask for.
    #[arg(long, help_heading = LOGIN_HEADING, value_enum, default_value = "none", value_name = "DIGEST")]
    pub header_digest: DigestArg,
    /// Data digest to ask for.
    #[arg(long, help_heading = LOGIN_HEADING, value_enum, default_value = "none", value_name = "DIGEST")]
    pub data_digest: DigestArg,
    /// CHAP user name; the secret comes from RSISCSI_CHAP_SECRET or --chap-secret-file.
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "NAME")]
    pub chap_user: Option<String>,
    /// File holding the CHAP secret (private to its owner).
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "FILE")]
    pub chap_secret_file: Option<PathBuf>,
    /// Mutual CHAP: the name the target must answer with; its secret comes from
    /// RSISCSI_TARGET_CHAP_SECRET or --target-chap-secret-file.
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "NAME")]
    pub target_chap_user: Option<String>,
    /// File holding the target's mutual CHAP secret (private to its owner).
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "FILE")]
    pub target_chap_secret_file: Option<PathBuf>,
}

/// How the service logs in for a service command that makes a login: sent
/// only when typed, else the service applies its own (mutual CHAP uses the
/// initiator's secret, `rsiscsi initiator chap-secret`).
#[derive(Debug, Clone, Default, Args)]
pub struct ServiceLoginArgs {
    /// Header digest to ask for (left out: not sent, the service applies its own).
    #[arg(long, help_heading = LOGIN_HEADING, value_enum, value_name = "DIGEST")]
    pub header_digest: Option<DigestArg>,
    /// Data digest to ask for (left out: not sent, the service applies its own).
    #[arg(long, help_heading = LOGIN_HEADING, value_enum, value_name = "DIGEST")]
    pub data_digest: Option<DigestArg>,
    /// CHAP user name; the secret comes from RSISCSI_CHAP_SECRET or --chap-secret-file and is
    /// sent to the service.
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "NAME")]
    pub chap_user: Option<String>,
    /// File holding the CHAP secret (private to its owner).
    #[arg(long, help_heading = LOGIN_HEADING, value_name = "FILE")]
    pub chap_secret_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the targets a portal offers (SendTargets), or an iSNS server lists for us (--isns):
    /// one `HOST:PORT,TPGT IQN` line per portal.
    Discover {
        /// HOST[:PORT] of the portal.
        #[arg(required_unless_present = "isns", conflicts_with = "isns")]
        portal: Option<String>,
        /// Ask this iSNS server (RFC 4171; port 3205 by default) instead: the targets its
        /// discovery domains show to our initiator name.
        #[arg(long, value_name = "HOST[:PORT]")]
        isns: Option<String>,
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// List each target of a portal with its LUNs, sizes, vendor and product.
    #[command(after_help = INITIATOR_PORT_HELP)]
    Ls {
        /// iscsi://HOST[:PORT]/ (every target) or iscsi://HOST[:PORT]/IQN/ (one target).
        url: String,
        /// Print a JSON array instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        mcs: McsArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Show INQUIRY data and device identifiers of a LUN.
    #[command(after_help = INITIATOR_PORT_HELP)]
    Inquiry {
        /// iscsi://HOST[:PORT]/IQN/LUN
        url: String,
        /// Print a JSON object instead.
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
        /// Print a JSON object instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Copy between local files and LUNs (each side a path or iscsi://HOST[:PORT]/IQN/LUN).
    #[command(after_help = INITIATOR_PORT_HELP)]
    Cp {
        /// What to read: a local file or iscsi://HOST[:PORT]/IQN/LUN.
        src: String,
        /// What to write: a local file (created or overwritten) or iscsi://HOST[:PORT]/IQN/LUN.
        dst: String,
        /// Byte offset in the LUN(s) where the range starts (a multiple of the block size).
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        offset: u64,
        /// Bytes to copy (default: the whole file, or the LUN from --offset to its end).
        #[arg(long, value_name = "BYTES")]
        length: Option<u64>,
        #[command(flatten)]
        progress: ProgressArgs,
        #[command(flatten)]
        mcs: McsArgs,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Measure bandwidth, IOPS, CPU per GiB and latency percentiles on a LUN (overwrites it with --rw write).
    #[command(after_help = INITIATOR_PORT_HELP)]
    Bench(crate::bench::BenchArgs),
    /// Serve a LUN over NBD (qemu, qemu-img, nbdcopy, nbdfuse) until SIGINT or SIGTERM, then
    /// flush it and log out.
    #[command(after_help = INITIATOR_PORT_HELP)]
    Nbd(crate::nbd::NbdArgs),
    /// Service: the send-target portals rsiscsid discovers targets on (add, remove, list).
    Portal {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: PortalCmd,
    },
    /// Service: the iSNS servers rsiscsid registers with and follows for targets (add, remove, list).
    Isns {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: IsnsCmd,
    },
    /// Service: discovered targets (refresh, list) and logging in to one (login).
    Target {
        #[command(flatten)]
        out: ServiceOut,
        #[command(subcommand)]
        cmd: TargetCmd,
    },
    /// Service: the sessions rsiscsid holds (list, add-connection, remove-connection, path, logout, policy,
    /// scsi, export, unexport).
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
    /// Print a shell completion script on stdout, e.g.
    /// `rsiscsi completions bash > /usr/share/bash-completion/completions/rsiscsi`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

/// The options of every service command: output and where the service is.
#[derive(Debug, Clone, Args)]
pub struct ServiceOut {
    /// Print the service's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The rsiscsid socket (default: RSISCSI_SOCKET, else $RUNTIME_DIRECTORY/rsiscsid.sock, else
    /// /run/rsiscsi/rsiscsid.sock as root, else $XDG_RUNTIME_DIR/rsiscsi/rsiscsid.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Where and how a connection is made (Windows `AddIScsiConnection` /
/// `LoginIScsiTarget` parameters).
#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// The initiator port to connect from: a local interface index as `ip link` shows it
    /// (Windows' InitiatorPortNumber), an interface name, or a local address (taken as the
    /// interface it is the first address of); the service connects from that interface's
    /// address of the portal's family (absent: any).
    #[arg(long, value_name = "N|IFACE|ADDRESS", value_parser = crate::local::parse_local)]
    pub initiator_port: Option<crate::local::Local>,
    /// ISCSI_SECURITY_FLAG_* bits in hex (e.g. 0x41; --ipsec sets them for you).
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u64)]
    pub security_flags: Option<u64>,
    #[command(flatten)]
    pub login: ServiceLoginArgs,
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
pub enum IsnsCmd {
    /// Add an iSNS server (RFC 4171): the service registers with it at once, lists the targets it
    /// shows this initiator and follows its change notifications (targets that register appear in
    /// `target list`, persistent logins of them are tried at once; targets that leave disappear).
    Add {
        /// HOST[:PORT] (port 3205 by default).
        server: String,
        /// Keep the server even if it cannot be reached now (the exit status is still 1); the service
        /// keeps trying.
        #[arg(long)]
        keep: bool,
    },
    /// Remove an iSNS server: the service deregisters from it, and the targets only it listed leave
    /// the target list.
    Remove {
        /// HOST[:PORT] (port 3205 by default).
        server: String,
    },
    /// List the iSNS servers, the state of the registration with each, and its last error.
    List,
}

// Parsed once per run: the size of the login variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// How commands are spread over the connections: failover-only, round-robin,
        /// round-robin-subset, least-queue-depth or weighted (default: the service's, round-robin).
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
        #[command(flatten)]
        ipsec: IpsecArgs,
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
        #[command(flatten)]
        ipsec: IpsecArgs,
    },
    /// Log out one connection of a session (not the last one).
    RemoveConnection {
        /// Session id (as `session list` shows it).
        session: String,
        /// Connection id (as `session list` or `session add-connection` shows it).
        connection: String,
    },
    /// Set a connection's path settings for the load-balance policies: its weight (used by
    /// the weighted policy; 0 keeps it out of use) and whether it is a primary or a standby
    /// path (failover-only and round-robin-subset use the primaries); prints the connection.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["weight", "primary", "standby"])))]
    Path {
        /// Session id (as `session list` shows it).
        session: String,
        /// Connection id (as `session list` or `session add-connection` shows it).
        connection: String,
        /// Its weight under the weighted policy (0: not used).
        #[arg(long, value_name = "N")]
        weight: Option<u32>,
        /// Make it a primary path.
        #[arg(long, conflicts_with = "standby")]
        primary: bool,
        /// Make it a standby path (used when no primary is left).
        #[arg(long)]
        standby: bool,
    },
    /// Log the whole session out (a persistent login stays stored).
    Logout {
        /// Session id (as `session list` shows it).
        session: String,
    },
    /// Set how commands are spread over the session's connections.
    Policy {
        /// Session id (as `session list` shows it).
        session: String,
        /// How commands are spread over the connections: failover-only, round-robin,
        /// round-robin-subset, least-queue-depth or weighted.
        #[arg(value_parser = parse_policy)]
        policy: iscsi_initiator::model::LoadBalancePolicy,
    },
    /// Send one SCSI command (CDB in hex, spaces allowed) and show status, sense and data.
    Scsi {
        /// Session id (as `session list` shows it).
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
    /// Serve a LUN of the session over NBD on a Unix socket (mode 0600) for qemu, qemu-img,
    /// nbdcopy; a persistent login serves it again after a restart.
    Export {
        /// Session id (as `session list` shows it).
        session: String,
        /// Logical unit number of the disk to serve.
        #[arg(long, value_name = "N")]
        lun: u64,
        /// Absolute path of the Unix socket the service creates; clients use
        /// nbd+unix:///?socket=PATH.
        #[arg(long, value_name = "PATH")]
        nbd_socket: PathBuf,
        /// Serve it read-only: writes, trims and zeroing fail with EPERM.
        #[arg(long)]
        read_only: bool,
        /// Name of the export (clients may also ask for the empty name); default IQN/LUN.
        #[arg(long, value_name = "NAME")]
        export_name: Option<String>,
    },
    /// Stop serving a LUN over NBD: requests in flight finish, the LUN is flushed, the socket removed.
    Unexport {
        /// Session id (as `session list` shows it).
        session: String,
        /// Logical unit number of the export.
        #[arg(long, value_name = "N")]
        lun: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum InitiatorCmd {
    /// Show the node name and alias the service logs in with, and whether its CHAP secret is set.
    Show,
    /// Change the node name (an iqn., eui. or naa. name) or the alias; new logins use them.
    Set {
        /// The new iSCSI node name.
        #[arg(long, value_name = "IQN")]
        name: Option<String>,
        /// The new alias (InitiatorAlias, RFC 7143 §13.7; empty: none).
        #[arg(long, value_name = "TEXT")]
        alias: Option<String>,
    },
    /// Set the initiator's own CHAP secret (mutual CHAP checks the target with it), read from
    /// RSISCSI_INITIATOR_CHAP_SECRET or a private file; 12 to 16 bytes, as Windows requires.
    ChapSecret {
        /// File holding the secret (private to its owner); default: RSISCSI_INITIATOR_CHAP_SECRET.
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

/// Whether a long command shows its progress on stderr. Without either
/// flag it does when stderr is a terminal.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ProgressArgs {
    /// Show progress on stderr even when it is not a terminal (then as one plain line a second, for logs).
    #[arg(long, conflicts_with = "no_progress")]
    pub progress: bool,
    /// Show no progress, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// How progress is shown: see [`ProgressArgs::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Off,
    /// indicatif's bars, redrawn in place on a terminal.
    Bar,
    /// One plain line a second, for a log or a pipe.
    Lines,
}

impl ProgressArgs {
    /// `--progress` and `--no-progress` decide (clap refuses both at once);
    /// without either, a terminal on stderr does.
    pub fn mode(self, stderr_is_terminal: bool) -> ProgressMode {
        match (self.progress, self.no_progress, stderr_is_terminal) {
            (_, true, _) => ProgressMode::Off,
            (_, false, true) => ProgressMode::Bar,
            (true, false, false) => ProgressMode::Lines,
            (false, false, false) => ProgressMode::Off,
        }
    }
}

/// What `--add-portal`, `--from` and `--weights` say about initiator ports,
/// shown after the options of every command that takes them.
pub const INITIATOR_PORT_HELP: &str = "\
LOCAL (--from, --add-portal HOST[:PORT]@LOCAL) is an initiator port: a local IP address, an
interface name (eth1, rsl-i2) or an interface index as `ip link` shows it (Windows'
InitiatorPortNumber is that index). The connection connects from that address (an interface:
its first address of the portal's family), and so does its reinstatement after a fault.";

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
    /// turn (repeat it, one per path or NIC); default: the URL's portal. `@LOCAL` makes
    /// the connection connect from that initiator port (address, interface name or index),
    /// e.g. 198.19.2.2@rsl-i2 or [::1]:3260@::1.
    #[arg(long = "add-portal", value_name = "HOST[:PORT][@LOCAL]", value_parser = crate::local::parse_add_portal)]
    pub add_portals: Vec<crate::local::AddPortal>,
    /// The initiator port the leading connection connects from: a local address, an
    /// interface name or an interface index (default: the route's choice).
    #[arg(long = "from", value_name = "LOCAL", value_parser = crate::local::parse_local)]
    pub from: Option<crate::local::Local>,
    /// One weight per connection, the leading one first (as many as --connections), e.g.
    /// 5,5,1,1; 0 keeps a connection out of use. Only --policy weighted uses them (the other
    /// policies keep them, unused).
    #[arg(long, value_name = "W1,W2,...", value_delimiter = ',', value_parser = clap::value_parser!(u32))]
    pub weights: Vec<u32>,
}

impl Default for McsArgs {
    fn default() -> Self {
        Self {
            connections: 1,
            policy: iscsi_initiator::model::LoadBalancePolicy::RoundRobin,
            add_portals: Vec::new(),
            from: None,
            weights: Vec::new(),
        }
    }
}

/// The longest `--hold-time` taken: beyond an hour a one-shot command that
/// cannot make progress is better ended and run again.
pub const MAX_HOLD_SECS: u64 = 3600;

/// What a one-shot command's session is given: how it logs in, how long it
/// waits for recovery (RFC 7143 §6.2, §7.1.4) before it gives up with the
/// fault that started it (the service keeps its own, longer budget), and the
/// PDU size it declares.
#[derive(Debug, Clone, Args)]
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
    // Read through `Common`, which `parse` fills from them.
    #[command(flatten)]
    pub login: LoginArgs,
    #[command(flatten)]
    pub ipsec: IpsecArgs,
    /// charon's VICI socket (default: RSISCSI_VICI_SOCKET, else /var/run/charon.vici).
    #[arg(long, help_heading = IPSEC_HEADING, requires = "ipsec", value_name = "PATH")]
    pub vici_socket: Option<PathBuf>,
}

impl Default for SessionArgs {
    fn default() -> Self {
        Self {
            hold_time: 15,
            max_recv_data_segment_length: None,
            login: LoginArgs::default(),
            ipsec: IpsecArgs::default(),
            vici_socket: None,
        }
    }
}

/// The help heading of the IPsec options.
const IPSEC_HEADING: &str = "IPsec options";

/// The IPsec mode of `--ipsec` (Windows ISCSI_SECURITY_FLAG_TUNNEL_MODE_PREFERRED
/// 0x40 or TRANSPORT_MODE_PREFERRED 0x20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpsecModeArg {
    Tunnel,
    Transport,
}

/// IPsec under every connection (RFC 7143 §9.3, RFC 3723): an IKEv2 SA
/// with a pre-shared key, set up by strongSwan's charon before each TCP
/// connection; a connection whose SA does not come up fails, never falls
/// back to clear text (so no `--require-ipsec`: `--ipsec` already is
/// Windows' ISCSI_LOGIN_FLAG_REQUIRE_IPSEC).
#[derive(Debug, Clone, Default, Args)]
pub struct IpsecArgs {
    /// Protect every connection with IPsec in this mode (IKEv2, pre-shared key; set up through
    /// strongSwan's charon, never falling back to clear text): security flags VALID |
    /// IKE_IPSEC_ENABLED | TUNNEL_MODE_PREFERRED or TRANSPORT_MODE_PREFERRED.
    #[arg(long, help_heading = IPSEC_HEADING, value_enum, value_name = "MODE")]
    pub ipsec: Option<IpsecModeArg>,
    /// Tunnel mode: the target side's tunnel end, address or host name (Windows'
    /// SetIscsiTunnelModeOuterAddress; default: the portal's address).
    #[arg(long, help_heading = IPSEC_HEADING, requires = "ipsec", value_name = "HOST")]
    pub ipsec_tunnel_peer: Option<String>,
    /// File holding the IKE pre-shared key (private to its owner; default: RSISCSI_IPSEC_PSK).
    #[arg(long, help_heading = IPSEC_HEADING, requires = "ipsec", value_name = "FILE")]
    pub ipsec_psk_file: Option<PathBuf>,
    /// Perfect forward secrecy: a Diffie-Hellman exchange for each ESP key (security flag
    /// PFS_ENABLED 0x10).
    #[arg(long, help_heading = IPSEC_HEADING, requires = "ipsec")]
    pub ipsec_pfs: bool,
}

impl IpsecArgs {
    /// The Windows security flags these options stand for (0: no IPsec).
    pub fn security_flags(&self) -> iscsi_initiator::model::SecurityFlags {
        use iscsi_initiator::model::SecurityFlags as F;
        let Some(mode) = self.ipsec else { return F(0) };
        let mut f = F::VALID | F::IKE_IPSEC_ENABLED;
        f = f | match mode {
            IpsecModeArg::Tunnel => F::TUNNEL_MODE_PREFERRED,
            IpsecModeArg::Transport => F::TRANSPORT_MODE_PREFERRED,
        };
        if self.ipsec_pfs {
            f = f | F::PFS_ENABLED;
        }
        f
    }

    /// `--ipsec-tunnel-peer` names a tunnel end: refused with transport mode
    /// (where the IKE peer is the target itself) rather than ignored.
    pub fn check(&self) -> Result<(), String> {
        if self.ipsec == Some(IpsecModeArg::Transport) && self.ipsec_tunnel_peer.is_some() {
            return Err("--ipsec-tunnel-peer names the end of a tunnel: it goes with --ipsec tunnel, not transport \
                        (in transport mode the IKE peer is the target itself)"
                .into());
        }
        Ok(())
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

impl PathArgs {
    /// `--initiator-port` as the port number the service takes.
    pub fn port(&self) -> Result<Option<u32>, String> {
        self.initiator_port
            .as_ref()
            .map(|l| crate::local::port_number(l).map_err(|m| format!("--initiator-port {l}: {m}")))
            .transpose()
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
        parse_from(args).unwrap().common.given
    }

    fn refused(args: &[&str]) -> String {
        match parse_from(args) {
            Err(Refused::Usage(m)) => m,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn progress_is_forced_either_way_or_follows_the_terminal() {
        let mode = |args: &[&str], tty| match parse_from(args).unwrap().command {
            Command::Cp { progress, .. } => progress.mode(tty),
            Command::Bench(b) => b.progress.mode(tty),
            other => panic!("{other:?}"),
        };
        let url = "iscsi://h/iqn.2024-01.x:y/0";
        for cmd in [vec!["rsiscsi", "cp", url, "f"], vec!["rsiscsi", "bench", url]] {
            let with = |flag: &'static str| [cmd.clone(), vec![flag]].concat();
            assert_eq!(mode(&cmd, true), ProgressMode::Bar);
            assert_eq!(mode(&cmd, false), ProgressMode::Off);
            assert_eq!(mode(&with("--progress"), true), ProgressMode::Bar);
            assert_eq!(mode(&with("--progress"), false), ProgressMode::Lines);
            assert_eq!(mode(&with("--no-progress"), true), ProgressMode::Off);
            assert_eq!(mode(&with("--no-progress"), false), ProgressMode::Off);
            let both = [cmd.clone(), vec!["--progress", "--no-progress"]].concat();
            assert!(refused(&both).contains("cannot be used with"), "{}", refused(&both));
        }
    }

    #[test]
    fn typed_digests_are_told_from_defaults() {
        let g = given(&["rsiscsi", "session", "add-connection", "1-2", "--portal", "h", "--header-digest", "none"]);
        assert_eq!(g, Given { header_digest: true, data_digest: false });
        let g = given(&["rsiscsi", "--data-digest", "crc32c", "target", "login", "iqn.x:y"]);
        assert_eq!(g, Given { header_digest: false, data_digest: true });
        assert_eq!(given(&["rsiscsi", "target", "list"]), Given::default());
        let g = given(&["rsiscsi", "portal", "add", "h", "--data-digest", "none", "--header-digest", "crc32c"]);
        assert_eq!(g, Given { header_digest: true, data_digest: true });
        // A one-shot command uses its default; nothing is "given" to a service.
        let c = parse_from(["rsiscsi", "capacity", "iscsi://h/iqn.2024-01.x:y/0"]).unwrap().common;
        assert_eq!((c.header_digest, c.given), (DigestArg::None, Given::default()));
    }

    #[test]
    fn connection_options_before_or_after_the_command_name() {
        let url = "iscsi://h/iqn.2024-01.x:y/0";
        for args in [
            vec!["rsiscsi", "--chap-user", "u", "--header-digest", "crc32c", "capacity", url],
            vec!["rsiscsi", "capacity", "--chap-user", "u", "--header-digest", "crc32c", url],
            vec!["rsiscsi", "--chap-user", "x", "capacity", url, "--chap-user", "u", "--header-digest=crc32c"],
        ] {
            let c = parse_from(&args).unwrap().common;
            assert_eq!((c.chap_user.as_deref(), c.header_digest), (Some("u"), DigestArg::Crc32c), "{args:?}");
        }
        for args in [
            vec!["rsiscsi", "--socket", "/s", "session", "list"],
            vec!["rsiscsi", "session", "--socket", "/s", "list"],
            vec!["rsiscsi", "session", "list", "--socket", "/s"],
        ] {
            let c = parse_from(&args).unwrap().common;
            assert_eq!(c.socket, Some(PathBuf::from("/s")), "{args:?}");
        }
        let c = parse_from(["rsiscsi", "-vv", "--chap-user", "u", "target", "login", "iqn.x:y"]).unwrap().common;
        assert_eq!((c.chap_user.as_deref(), c.verbose), (Some("u"), 2));
        // What a command does not use is refused, not ignored, wherever it is typed.
        assert_eq!(
            refused(&["rsiscsi", "--socket", "/s", "capacity", url]),
            "--socket is not used by `rsiscsi capacity` (its options: rsiscsi capacity --help)"
        );
        assert_eq!(
            refused(&["rsiscsi", "capacity", url, "--socket", "/s"]),
            "--socket is not used by `rsiscsi capacity` (its options: rsiscsi capacity --help)"
        );
        assert_eq!(
            refused(&["rsiscsi", "--chap-user", "u", "session", "list"]),
            "--chap-user is not used by `rsiscsi session list` (its options: rsiscsi session list --help)"
        );
        assert_eq!(
            refused(&["rsiscsi", "session", "logout", "1-2", "--header-digest=none"]),
            "--header-digest is not used by `rsiscsi session logout` (its options: rsiscsi session logout --help)"
        );
        let name = "the service logs in with its own initiator name; --initiator-name is for the one-shot commands (see rsiscsi --help)";
        assert_eq!(refused(&["rsiscsi", "--initiator-name", "iqn.2020-01.x:y", "session", "list"]), name);
        assert_eq!(refused(&["rsiscsi", "target", "login", "--initiator-name", "iqn.2020-01.x:y", "t"]), name);
        assert!(
            refused(&["rsiscsi", "target", "login", "t", "--target-chap-user", "m"]).contains("initiator chap-secret")
        );
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
            let one_shot = ["discover", "ls", "inquiry", "capacity", "cp", "bench", "nbd"].contains(&sub.get_name());
            assert_eq!(has, one_shot, "{}", sub.get_name());
        }
    }

    /// `--ipsec` stands for Windows' security flags; its details need it;
    /// the same options on every one-shot command and on the two service
    /// commands that make a connection, nowhere else.
    #[test]
    fn ipsec_options_map_to_the_windows_flags() {
        let url = "iscsi://h/iqn.2024-01.x:y/0";
        let ipsec = |args: &[&str]| match parse_from(args).unwrap().command {
            Command::Cp { session, .. } => session.ipsec,
            other => panic!("{other:?}"),
        };
        let flags = |args: &[&str]| ipsec(args).security_flags().bits();
        assert_eq!(flags(&["rsiscsi", "cp", url, "f"]), 0);
        assert_eq!(flags(&["rsiscsi", "cp", "--ipsec", "tunnel", url, "f"]), 0x43);
        assert_eq!(flags(&["rsiscsi", "cp", "--ipsec", "transport", url, "f"]), 0x23);
        assert_eq!(flags(&["rsiscsi", "cp", "--ipsec", "tunnel", "--ipsec-pfs", url, "f"]), 0x53);
        for detail in [
            vec!["--ipsec-psk-file", "k"],
            vec!["--ipsec-tunnel-peer", "h"],
            vec!["--ipsec-pfs"],
            vec!["--vici-socket", "/s"],
        ] {
            let args = [vec!["rsiscsi", "cp"], detail.clone(), vec![url, "f"]].concat();
            assert!(refused(&args).contains("--ipsec <MODE>"), "{detail:?}: {}", refused(&args));
        }
        let a = ipsec(&["rsiscsi", "cp", "--ipsec", "transport", "--ipsec-tunnel-peer", "h", url, "f"]);
        assert!(a.check().unwrap_err().contains("goes with --ipsec tunnel"));
        assert!(refused(&["rsiscsi", "cp", "--ipsec", "esp", url, "f"]).contains("invalid value"));
        let cmd = Cli::command();
        let mut with = Vec::new();
        fn walk(c: &clap::Command, path: String, out: &mut Vec<(String, bool, bool)>) {
            for s in c.get_subcommands() {
                let p = if path.is_empty() { s.get_name().to_string() } else { format!("{path} {}", s.get_name()) };
                let has = |id: &str| s.get_arguments().any(|a| a.get_id() == id);
                if !s.has_subcommands() {
                    out.push((p.clone(), has("ipsec"), has("vici_socket")));
                }
                walk(s, p, out);
            }
        }
        walk(&cmd, String::new(), &mut with);
        for (p, ipsec, vici) in with {
            let one_shot = ["discover", "ls", "inquiry", "capacity", "cp", "bench", "nbd"].contains(&p.as_str());
            let service = ["target login", "session add-connection"].contains(&p.as_str());
            assert_eq!(ipsec, one_shot || service, "{p}: --ipsec");
            assert_eq!(vici, one_shot, "{p}: --vici-socket (the service has its own)");
        }
    }

    /// `--from`, `--add-portal ...@LOCAL` and `--weights` on the one-shot
    /// commands that make a session; what cannot fit is refused before any
    /// login, with the option named.
    #[test]
    fn mcs_local_addresses_and_weights() {
        use crate::local::Local;
        let url = "iscsi://127.0.0.1/iqn.2024-01.x:y/0";
        let mcs = |args: &[&str]| match parse_from([&["rsiscsi", "bench", url][..], args].concat()) {
            Ok(cli) => match cli.command {
                Command::Bench(b) => Ok(b.mcs),
                other => panic!("{other:?}"),
            },
            Err(Refused::Usage(m)) => Err(m),
            Err(other) => panic!("{other:?}"),
        };
        let m = mcs(&[
            "--connections",
            "3",
            "--from",
            "lo",
            "--add-portal",
            "198.19.2.2@rsl-i2",
            "--add-portal",
            "[::1]:3261@::1",
            "--weights",
            "5,1,0",
            "--policy",
            "weighted",
        ])
        .unwrap();
        assert_eq!(m.from, Some(Local::Interface("lo".into())));
        assert_eq!(m.add_portals[0].local, Some(Local::Interface("rsl-i2".into())));
        assert_eq!(
            (m.add_portals[1].portal.port, &m.add_portals[1].local),
            (3261, &Some(Local::Address("::1".parse().unwrap())))
        );
        assert_eq!(m.weights, vec![5, 1, 0]);
        assert_eq!(mcs(&["--from", "3"]).unwrap().from, Some(Local::Index(3)));
        for (bad, says) in [
            (vec!["--weights", "1,x"], "invalid value"),
            (vec!["--weights", "-1"], "unexpected argument"),
            (vec!["--from", "a/b"], "neither an IP address"),
            (vec!["--add-portal", "h@"], "empty local address"),
        ] {
            let m = mcs(&bad).unwrap_err();
            assert!(m.contains(says), "{bad:?}: {m}");
        }
        let check = |args: &[&str]| crate::commands::check_mcs(&mcs(args).unwrap()).map_err(|e| e.to_string());
        assert_eq!(check(&["--connections", "2", "--weights", "3,1"]), Ok(()));
        assert_eq!(
            check(&["--connections", "3", "--weights", "3,1"]),
            Err("--weights gives 2 weights for 3 connections: give one per connection, the leading one first".into())
        );
        assert!(check(&["--weights", "0"]).unwrap_err().contains("all 0"));
        assert!(check(&["--weights", "2"]).is_ok(), "one weight for the one connection");
        let e = check(&["--connections", "2", "--add-portal", "127.0.0.1@rsnosuch0"]).unwrap_err();
        assert!(e.starts_with("--add-portal 127.0.0.1:3260@rsnosuch0: no network interface"), "{e}");
        // The help says what an initiator port is.
        let help = Cli::command().find_subcommand_mut("cp").unwrap().render_long_help().to_string();
        assert!(help.contains("InitiatorPortNumber") && help.contains("HOST[:PORT][@LOCAL]"), "{help}");
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
