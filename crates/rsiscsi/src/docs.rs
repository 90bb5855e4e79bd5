//! Shell completions and manual pages, both generated from the clap
//! definitions in `cli.rs` so that they cannot say something the parser
//! does not do. The pages are kept under `dist/man/` (installed by
//! `scripts/install.sh`); a test regenerates them and fails when the files
//! are stale (`RSISCSI_UPDATE_MAN=1 cargo test -p rsiscsi --bin rsiscsi docs`
//! rewrites them).

use clap::CommandFactory;

use crate::cli::Cli;
use crate::commands::CmdResult;

/// `rsiscsi completions SHELL`: the script on stdout.
pub fn print_completions(shell: clap_complete::Shell) -> CmdResult {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rsiscsi", &mut out);
    let mut stdout = std::io::stdout().lock();
    match std::io::Write::write_all(&mut stdout, &out).and_then(|()| std::io::Write::flush(&mut stdout)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to stdout: {e}").into()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::CommandFactory;

    use crate::cli::Cli;

    /// The manual pages of a command and of each of its subcommands, as
    /// (file name, troff): `rsiscsi.1`, `rsiscsi-cp.1`,
    /// `rsiscsi-session-add-connection.1`, ... (as `clap_mangen::generate_to`
    /// names and writes them, but in memory).
    fn pages(cmd: clap::Command, section: &str) -> Vec<(String, Vec<u8>)> {
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        let source = format!("{} {}", cmd.get_name(), env!("CARGO_PKG_VERSION"));
        let mut out = Vec::new();
        add_pages(cmd, section, &source, &mut out);
        out
    }

    fn add_pages(cmd: clap::Command, section: &str, source: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            add_pages(sub, section, source, out);
        }
        let man = clap_mangen::Man::new(cmd).section(section).source(source).manual("rsiscsi");
        let mut page = Vec::new();
        man.render(&mut page).expect("rendering into memory");
        out.push((man.get_filename(), page));
    }

    fn dist() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
    }

    fn man_dir() -> PathBuf {
        dist().join("man")
    }

    fn update() -> bool {
        std::env::var_os("RSISCSI_UPDATE_MAN").is_some_and(|v| v == "1")
    }

    /// rsiscsid's bash completion (rsiscsi prints its own with `rsiscsi
    /// completions`; rsiscsid has no such command, so its script is a file).
    #[test]
    fn rsiscsid_completion_in_dist_is_current() {
        let mut want = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut rsiscsid::Options::command(), "rsiscsid", &mut want);
        let file = dist().join("completions/rsiscsid.bash");
        if update() {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &want).unwrap();
        }
        assert!(
            std::fs::read(&file).ok() == Some(want),
            "dist/completions/rsiscsid.bash is stale; regenerate with RSISCSI_UPDATE_MAN=1 cargo test -p rsiscsi --bin rsiscsi docs"
        );
    }

    /// Every command and subcommand, as (path, command), root excluded.
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        // clap's own `help` subcommands take no options.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            path.push(sub.get_name().to_string());
            out.push((path.clone(), sub.clone()));
            walk(sub, path, out);
            path.pop();
        }
    }

    fn commands() -> Vec<(Vec<String>, clap::Command)> {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, &mut Vec::new(), &mut out);
        out
    }

    /// Every argument of every command says what it is.
    #[test]
    fn every_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut all = vec![(Vec::new(), cmd)];
        all.extend(commands());
        let mut missing = Vec::new();
        for (path, c) in &all {
            assert!(c.get_about().is_some(), "`rsiscsi {}` has no about", path.join(" "));
            for a in c.get_arguments().filter(|a| !a.is_hide_set()) {
                if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("rsiscsi {} {}", path.join(" "), a.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// Each command lists the connection options it uses and no other: a
    /// one-shot command logs in itself (all but --socket); a service
    /// command talks to rsiscsid (--socket), and the three that make a login
    /// send the digests and CHAP (not --initiator-name: the service has its
    /// own; not the target's CHAP: mutual CHAP uses the initiator's secret).
    #[test]
    fn connection_options_only_where_used() {
        let one_shot = [
            "initiator_name",
            "header_digest",
            "data_digest",
            "chap_user",
            "chap_secret_file",
            "target_chap_user",
            "target_chap_secret_file",
        ];
        let login = ["socket", "header_digest", "data_digest", "chap_user", "chap_secret_file"];
        let known: Vec<&str> = one_shot.iter().chain(&["socket"]).copied().collect();
        for (path, c) in commands().into_iter().filter(|(_, c)| !c.has_subcommands()) {
            let p = path.join(" ");
            let want: &[&str] = match p.as_str() {
                "discover" | "ls" | "inquiry" | "capacity" | "cp" | "bench" | "nbd" => &one_shot,
                "portal add" | "target login" | "session add-connection" => &login,
                "completions" => &[],
                _ if crate::cli::SERVICE_COMMANDS.contains(&path[0].as_str()) => &["socket"],
                _ => panic!("`rsiscsi {p}` is new: say which connection options it uses"),
            };
            let mut has: Vec<&str> =
                c.get_arguments().map(|a| a.get_id().as_str()).filter(|id| known.contains(id)).collect();
            has.sort_unstable();
            let mut want = want.to_vec();
            want.sort_unstable();
            assert_eq!(has, want, "rsiscsi {p}");
            // A default is shown only where it is applied.
            for a in c.get_arguments().filter(|a| ["header_digest", "data_digest"].contains(&a.get_id().as_str())) {
                assert_eq!(!a.get_default_values().is_empty(), one_shot.len() == want.len(), "rsiscsi {p}");
            }
        }
    }

    /// Every generated page equals its file in dist/man, and dist/man has
    /// no page of a command that is gone.
    #[test]
    fn man_pages_in_dist_are_current() {
        let mut want = pages(Cli::command(), "1");
        want.extend(pages(rsiscsid::Options::command(), "8"));
        let dir = man_dir();
        if update() {
            std::fs::create_dir_all(&dir).unwrap();
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "1" || x == "8") {
                    std::fs::remove_file(p).unwrap();
                }
            }
            for (name, page) in &want {
                std::fs::write(dir.join(name), page).unwrap();
            }
        }
        let mut stale = Vec::new();
        for (name, page) in &want {
            if std::fs::read(dir.join(name)).ok().as_ref() != Some(page) {
                stale.push(name.clone());
            }
        }
        let mut have: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        have.retain(|n| (n.ends_with(".1") || n.ends_with(".8")) && !want.iter().any(|(w, _)| w == n));
        assert!(
            stale.is_empty() && have.is_empty(),
            "dist/man is stale: {stale:?} differ, {have:?} are of no command; \
             regenerate with RSISCSI_UPDATE_MAN=1 cargo test -p rsiscsi --bin rsiscsi docs"
        );
        assert!(want.iter().any(|(n, _)| n == "rsiscsi-session-add-connection.1"));
        assert!(want.iter().any(|(n, _)| n == "rsiscsid.8"));
    }
}
