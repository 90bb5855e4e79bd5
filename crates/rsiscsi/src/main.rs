//! `rsiscsi`: a command-line iSCSI initiator. Parses arguments, runs the
//! command, prints one clear line on failure.

mod bench;
mod cli;
mod commands;
mod config;
mod creds;
mod docs;
mod local;
mod nbd;
mod service;
mod stamp;
mod url;

use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rsiscsi: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let cli::Command::Completions { shell } = &args.command {
        return match docs::print_completions(*shell) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rsiscsi: error: {e}");
                ExitCode::from(e.exit_status())
            }
        };
    }
    // Without -v the only thing on stderr is the one error line (or the
    // progress bar): library warnings would break that for scripts.
    let filter = match args.common.verbose {
        0 => "error",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RSISCSI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // `rsiscsi nbd` moves every byte between two sockets and its tasks only
    // hand buffers to each other: on one thread they skip the cross-thread
    // wake-ups and leave the other CPUs to the NBD client and the target
    // (bench/results/2026-12-06-nbd.md: 1 GiB through nbdcopy, server CPU
    // 0.55 -> 0.51 s writing, 0.54 -> 0.41 s reading, on 2 CPUs).
    let mut builder = if matches!(args.command, cli::Command::Nbd(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let cli::Command::Bench(b) = &args.command
        && let Some(n) = b.worker_threads()
    {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rsiscsi: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(out) = rt.block_on(service::run(&args.common, &args.command)) {
        return match out {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rsiscsi: error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    match rt.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rsiscsi: error: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}
