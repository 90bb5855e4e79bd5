//! What a new user reads first: `--help` of every command describes every
//! argument and lists only options the command takes; the completion
//! scripts are valid. No lab and no service needed: the commands are run
//! against a closed port and an absent socket, so that what comes back is
//! "unreachable" or "no rsiscsid", never "usage error".
//!
//! The commands are found through the manual pages in dist/man (one per
//! command; the unit test `docs::tests::man_pages_in_dist_are_current`
//! keeps them equal to the clap definitions).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary with its socket at `socket` and its name files beside it:
/// a test never writes the host's /etc/rsiscsi or ~/.config.
fn rsiscsi(args: &[&str], socket: &Path) -> Output {
    let scratch = socket.parent().unwrap_or(Path::new("/nonexistent"));
    Command::new(env!("CARGO_BIN_EXE_rsiscsi"))
        .args(args)
        .env("RSISCSI_SOCKET", socket)
        .env("RSISCSI_CONFIG_DIR", scratch.join("config"))
        .env("RSISCSI_SYSTEM_CONFIG_DIR", scratch.join("etc"))
        .env("XDG_CONFIG_HOME", scratch.join("xdg"))
        .env_remove("RSISCSI_CHAP_SECRET")
        .env_remove("RSISCSI_TARGET_CHAP_SECRET")
        .env_remove("RSISCSI_INITIATOR_CHAP_SECRET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

/// Every command path (`["session", "add-connection"]`, ...), from the
/// names of the manual pages.
fn command_paths() -> Vec<Vec<String>> {
    let mut paths: Vec<Vec<String>> = std::fs::read_dir(dist().join("man"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("rsiscsi-")?.strip_suffix(".1").map(str::to_string))
        .map(|n| {
            // Subcommand names have dashes too: `session-add-connection`.
            let (group, rest) = n.split_once('-').unwrap_or((&n, ""));
            if ["portal", "isns", "target", "session", "initiator", "persistent"].contains(&group) && !rest.is_empty() {
                vec![group.to_string(), rest.to_string()]
            } else {
                vec![n.clone()]
            }
        })
        .collect();
    paths.sort();
    assert!(paths.len() > 25, "{paths:?}");
    paths
}

/// One entry of a help listing: `<SRC>`, `--offset <BYTES>`, `-v, --verbose...`.
struct Entry {
    term: String,
    help: String,
}

/// The entries of `--help` output, under every heading, with their help
/// text (on the same line, or on the lines below in clap's long layout).
fn entries(help: &str) -> Vec<Entry> {
    let lines: Vec<&str> = help.lines().collect();
    let mut out = Vec::new();
    let mut in_list = false;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            in_list = line != &"Commands:" && line != &"Usage:";
            continue;
        }
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if !in_list || !(2..=6).contains(&indent) || !(t.starts_with('-') || t.starts_with('<')) {
            continue;
        }
        let (term, rest) = match t.find("  ") {
            Some(at) => (&t[..at], t[at..].trim()),
            None => (t, ""),
        };
        let mut help = rest.to_string();
        if help.is_empty()
            && let Some(next) = lines.get(i + 1)
            && next.len() - next.trim_start().len() > indent
            && !next.trim_start().starts_with(['-', '<'])
        {
            help = next.trim().to_string();
        }
        out.push(Entry { term: term.to_string(), help });
    }
    out
}

#[test]
fn every_argument_of_every_command_has_help() {
    let tmp = tempdir("help");
    let mut all = vec![Vec::new()];
    all.extend(command_paths());
    let mut missing = Vec::new();
    for path in &all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = rsiscsi(&args, &tmp.join("none.sock"));
        assert!(o.status.success(), "rsiscsi {args:?}: {}", text(&o.stderr));
        let help = text(&o.stdout);
        let es = entries(&help);
        assert!(es.iter().any(|e| e.term.contains("--help")), "rsiscsi {args:?}:\n{help}");
        for e in es.iter().filter(|e| e.help.is_empty()) {
            missing.push(format!("rsiscsi {} {}", path.join(" "), e.term));
        }
    }
    assert!(missing.is_empty(), "without a description: {missing:?}");
}

/// The arguments each command needs, as a user would type them.
fn positionals(path: &[String], tmp: &Path) -> Vec<String> {
    let lun = "iscsi://127.0.0.1:1/iqn.2024-01.lab.example:help/0".to_string();
    let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match path.join(" ").as_str() {
        "discover" | "portal add" | "portal remove" | "isns add" | "isns remove" => v(&["127.0.0.1:1"]),
        "ls" => v(&["iscsi://127.0.0.1:1/"]),
        "inquiry" | "capacity" | "bench" => vec![lun],
        "cp" => vec![lun, tmp.join("out").display().to_string()],
        "completions" => v(&["bash"]),
        "target login" | "persistent remove" => v(&["iqn.2024-01.lab.example:help"]),
        "session add-connection" => v(&["--portal", "127.0.0.1:1", "1-2"]),
        "initiator set" => v(&["--alias", "help"]),
        "session remove-connection" => v(&["1-2", "3"]),
        "session logout" => v(&["1-2"]),
        "session path" => v(&["1-2", "3", "--weight", "1"]),
        "session policy" => v(&["1-2", "round-robin"]),
        "session scsi" => v(&["1-2", "0", "12", "00", "00", "00", "60", "00"]),
        "nbd" => vec![lun, "--socket".into(), tmp.join("nbd.sock").display().to_string()],
        "session export" => {
            vec![
                "1-2".into(),
                "--lun".into(),
                "1".into(),
                "--nbd-socket".into(),
                tmp.join("x.sock").display().to_string(),
            ]
        }
        "session unexport" => v(&["1-2", "--lun", "1"]),
        _ => Vec::new(),
    }
}

/// A value each option that takes one (`--name <VALUE>` in the help) can take.
fn sample(long: &str, tmp: &Path) -> String {
    let file = || tmp.join("secret").display().to_string();
    match long {
        "--socket" => tmp.join("none.sock").display().to_string(),
        "--portal" | "--add-portal" => "127.0.0.1:1".into(),
        "--initiator-name" | "--name" => "iqn.2024-01.lab.example:help".into(),
        "--header-digest" | "--data-digest" => "crc32c".into(),
        "--chap-user" | "--target-chap-user" => "user".into(),
        "--chap-secret-file" | "--target-chap-secret-file" | "--secret-file" | "--data-out" => file(),
        "--connections" | "--threads" | "--iodepth" | "--time" | "--initiator-port" => "1".into(),
        "--from" => "127.0.0.1".into(),
        "--weights" | "--weight" | "--seed" => "1".into(),
        "--policy" => "round-robin".into(),
        "--hold-time" | "--link-down-time" => "5".into(),
        "--security-flags" => "0x0".into(),
        "--offset" | "--warmup" => "0".into(),
        "--length" | "--data-in" => "512".into(),
        "--max-recv-data-segment-length" | "--bs" => "64k".into(),
        "--size" => "1M".into(),
        "--rw" => "read".into(),
        "--alias" => "help".into(),
        "--listen" => "127.0.0.1:0".into(),
        "--isns" => "127.0.0.1:1".into(),
        "--export-name" => "help".into(),
        "--max-clients" | "--lun" => "1".into(),
        "--nbd-socket" => tmp.join("x.sock").display().to_string(),
        "--ipsec" => "tunnel".into(),
        "--ipsec-tunnel-peer" => "127.0.0.1".into(),
        "--ipsec-psk-file" => file(),
        "--vici-socket" => tmp.join("charon.vici").display().to_string(),
        other => panic!("no sample value for {other}: add one"),
    }
    .to_string()
}

/// Each option a command lists is taken by it: the run ends in the command's
/// own failure (unreachable target, no service, no secret), never in a usage
/// error or "not used by".
#[test]
fn every_listed_option_is_taken() {
    let tmp = tempdir("taken");
    let secret = tmp.join("secret");
    std::fs::write(&secret, "HelpSecret-123").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let socket = tmp.join("none.sock");
    let mut tried = 0;
    for path in command_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let o = rsiscsi(&args, &socket);
        let help = text(&o.stdout);
        if help.contains("\nCommands:") {
            continue;
        }
        let base = positionals(&path, &tmp);
        for e in entries(&help) {
            let Some(long) = e.term.split([',', ' ', '.']).map(str::trim).find(|w| w.starts_with("--")) else {
                continue;
            };
            if long == "--help" || base.iter().any(|b| b == long) {
                continue;
            }
            // `nbd` serves on --socket or on --listen, not both; `discover`
            // asks a portal or an iSNS server.
            let base: Vec<String> = match base.iter().position(|b| b == "--socket") {
                Some(i) if long == "--listen" => base.iter().take(i).cloned().collect(),
                _ if long == "--isns" => Vec::new(),
                _ => base.clone(),
            };
            let mut args: Vec<String> = path.clone();
            args.push(long.to_string());
            if e.term.contains('<') {
                args.push(sample(long, &tmp));
            }
            // The IPsec details go with --ipsec (clap's `requires`).
            if long.starts_with("--ipsec-") || long == "--vici-socket" {
                args.extend(["--ipsec".to_string(), "tunnel".to_string()]);
            }
            // The stamps' seed and the prefill go with bench's --verify.
            if long == "--seed" || long == "--prefill" {
                args.push("--verify".to_string());
            }
            args.extend(base.iter().cloned());
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = rsiscsi(&argv, &socket);
            let err = text(&o.stderr);
            assert_ne!(o.status.code(), Some(2), "rsiscsi {}: {err}", args.join(" "));
            assert!(!err.contains("not used by"), "rsiscsi {}: {err}", args.join(" "));
            tried += 1;
        }
    }
    assert!(tried > 100, "{tried}");
}

#[test]
fn completion_scripts() {
    let tmp = tempdir("completions");
    let socket = tmp.join("none.sock");
    let script = |shell: &str| {
        let o = rsiscsi(&["completions", shell], &socket);
        assert!(o.status.success(), "{shell}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let bash = script("bash");
    let file = tmp.join("rsiscsi.bash");
    std::fs::write(&file, &bash).unwrap();
    let rsiscsid = dist().join("completions/rsiscsid.bash");
    for f in [&file, &rsiscsid] {
        let o = Command::new("bash").arg("-n").arg(f).output().unwrap();
        assert!(o.status.success(), "bash -n {}: {}", f.display(), text(&o.stderr));
    }
    // What bash offers after the words typed (the last one being completed).
    let complete = |words: &[&str]| {
        let cur = words.last().unwrap();
        let prev = words.get(words.len().wrapping_sub(2)).unwrap();
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({}); COMP_CWORD={}; _rsiscsi rsiscsi '{cur}' '{prev}'; echo \"${{COMPREPLY[@]}}\"",
                file.display(),
                words.join(" "),
                words.len() - 1
            ))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(complete(&["rsiscsi", "session", "add-c"]), ["add-connection"]);
    assert!(complete(&["rsiscsi", "session", "add-connection", "--"]).contains(&"--socket".to_string()));
    assert!(complete(&["rsiscsi", "cp", "--"]).contains(&"--chap-user".to_string()));
    assert!(!complete(&["rsiscsi", "cp", "--"]).contains(&"--socket".to_string()));
    assert!(!complete(&["rsiscsi", "session", "list", "--"]).contains(&"--chap-user".to_string()));
    for shell in ["bash", "zsh", "fish"] {
        let s = script(shell);
        for word in ["discover", "cp", "add-connection", "hold-time", "chap-user"] {
            assert!(s.contains(word), "{shell} completion lacks {word}");
        }
    }
    // An unknown shell is a usage error.
    let o = rsiscsi(&["completions", "nosh"], &socket);
    assert_eq!(o.status.code(), Some(2));
}

/// A scratch directory of this test run.
fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rsiscsi-help-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
