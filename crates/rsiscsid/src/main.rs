//! `rsiscsid`: see the crate documentation and README.md.

use clap::Parser;
use rsiscsid::Options;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let opts = Options::parse();
    let filter = EnvFilter::try_new(&opts.log_level).unwrap_or_else(|e| {
        eprintln!("rsiscsid: bad --log-level {:?} ({e}); using info", opts.log_level);
        EnvFilter::new("info")
    });
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rsiscsid: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(rsiscsid::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
