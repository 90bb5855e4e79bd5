//! The well-behaved sim checked by libiscsi's `iscsi-test-cu` (package
//! libiscsi-bin; scripts/test.sh installs it): each chosen test runs against
//! a fresh in-process sim and must run, not be skipped, and not fail.
//!
//! Passing (libiscsi-bin 1.19.0, recorded 2026-11):
//! - iSCSI.iSCSIcmdsn.iSCSICmdSnTooHigh, iSCSICmdSnTooLow (RFC 7143 §4.2.2.1:
//!   a command outside the CmdSN window is silently ignored)
//! - iSCSI.iSCSIdatasn.iSCSIDataSnInvalid (§7.4, §7.8.1: a write whose
//!   Data-Out DataSN is out of order ends in CHECK CONDITION)
//! - iSCSI.iSCSIResiduals: Read10Invalid, Read10/12/16Residuals,
//!   Write10/12/16Residuals, WriteVerify10/12/16Residuals (§11.4.5)
//! - iSCSI.iSCSITMF: AbortTaskSimpleAsync, LUNResetSimpleAsync (§11.5; see
//!   `iscsi_task_management` for an assertion libiscsi 1.19.0 gets wrong)
//! - SCSI: TestUnitReady, Inquiry (7), ReadCapacity10, ReadCapacity16 (4),
//!   Read10 (6), Read12 (5), Read16 (5), Write10 (6), Write12 (5), Write16 (5),
//!   WriteVerify10/12/16 (6 each), Verify10/12/16 (8 each), ModeSense6 (5;
//!   Control-SWP finds SWP not changeable and checks no further), Mandatory.
//!
//! These four iSCSI suites are the whole iSCSI family of this build (it has
//! no CHAP, NOP or SendTargets tests, nor a REPORT LUNS family).
//!
//! Left out: families whose tests would only print "[SKIPPED]" and pass
//! vacuously, which proves nothing, because the RAM LUN does not have the
//! feature: Read6 (no READ(6)); StartStopUnit, PreventAllow and NoMedia
//! (no removable medium); ReadOnly (never write-protected); Unmap,
//! WriteSame10/16, GetLBAStatus (no thin provisioning); CompareAndWrite,
//! OrWrite, WriteAtomic16, ExtendedCopy, ReceiveCopyResults, Sanitize,
//! ReadDefectData10/12, Prefetch10/16, ReportSupportedOpcodes and the
//! persistent reservation families (Prin*, Prout*, Reserve6): commands the
//! sim does not implement. MultipathIO needs a second portal URL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iscsi_target_sim::{SimConfig, SimTarget};

const TOOL: &str = "iscsi-test-cu";

/// Longest one `iscsi-test-cu` run may take (the CmdSN tests wait out a 3 s
/// timeout each; a sim that hangs must not hang the suite).
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Messages of "[SKIPPED]" lines that are expected: the tool's own probes
/// at start-up and the optional features its tests look for first.
const EXPECTED_SKIPS: &[&str] = &[
    "PERSISTENT RESERVE IN is not implemented",
    "REPORT_SUPPORTED_OPCODES is not implemented",
    // Inquiry.BlockLimits checks the UNMAP limits only on thin LUNs.
    "Logical unit is fully provisioned",
];

/// One row of the CUnit "Run Summary".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    total: u32,
    ran: u32,
    passed: u32,
    failed: u32,
}

/// What one run reported.
#[derive(Debug)]
struct Summary {
    suites_failed: u32,
    tests: Counts,
    asserts: Counts,
    unexpected_skips: Vec<String>,
}

/// Reads the CUnit summary:
/// ```text
/// Run Summary:    Type  Total    Ran Passed Failed Inactive
///               suites      4      4    n/a      0        0
///                tests     15     15     15      0        0
///              asserts    339    339    339      0      n/a
/// ```
fn parse_summary(out: &str) -> Option<Summary> {
    let row = |name: &str| -> Option<Vec<Option<u32>>> {
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(name))?;
        Some(line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect())
    };
    let counts = |name: &str| -> Option<Counts> {
        let r = row(name)?;
        Some(Counts { total: (*r.first()?)?, ran: (*r.get(1)?)?, passed: (*r.get(2)?)?, failed: (*r.get(3)?)? })
    };
    let suites = row("suites")?;
    let unexpected_skips = out
        .lines()
        .filter(|l| l.contains("[SKIPPED]"))
        .filter(|l| !EXPECTED_SKIPS.iter().any(|s| l.contains(s)))
        .map(|l| l.trim().to_string())
        .collect();
    Some(Summary {
        suites_failed: (*suites.get(3)?)?,
        tests: counts("tests")?,
        asserts: counts("asserts")?,
        unexpected_skips,
    })
}

/// The tool, or a loud failure: this test must not pass by not running.
fn tool() -> &'static str {
    let found =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(TOOL).is_file()));
    assert!(found, "{TOOL} is not installed: install libiscsi-bin (scripts/test.sh does)");
    TOOL
}

/// Runs `iscsi-test-cu --test NAME` against a fresh sim; returns the
/// summary, the output, and the sim (for its stats).
async fn run(test: &str, dataloss: bool) -> (Summary, String, SimTarget) {
    let tool = tool();
    let cfg = SimConfig { lun_size: 32 << 20, ..SimConfig::default() };
    let sim = SimTarget::start(cfg).await.expect("sim starts");
    let url = format!("iscsi://{}/{}/0", sim.addr(), sim.target_name());
    let mut cmd = Command::new(tool);
    cmd.arg("-n").arg("--test").arg(test);
    if dataloss {
        cmd.arg("--dataloss");
    }
    cmd.arg(&url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let test_name = test.to_string();
    // The sim serves on the runtime's other worker while this one waits.
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("iscsi-test-cu starts");
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            if child.try_wait().expect("wait for iscsi-test-cu").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{TOOL} --test {test_name} did not finish within {RUN_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().expect("iscsi-test-cu output")
    })
    .await
    .expect("runner thread");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary = parse_summary(&text).unwrap_or_else(|| panic!("no CUnit summary from {test}:\n{text}"));
    (summary, text, sim)
}

/// Asserts that `test` ran at least one test, skipped nothing unexpected
/// and failed nothing.
async fn passes(test: &str, dataloss: bool) -> (Summary, SimTarget) {
    passes_but_for(test, dataloss, None).await
}

/// CUnit's failure lines: `    1. test_x.c:157  - CU_ASSERT_EQUAL(a,1)`.
fn failure_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(n, rest)| n.parse::<u32>().is_ok() && rest.contains(".c:") && rest.contains(" - "))
        })
        .map(|l| l.split_once(". ").map_or(l, |(_, rest)| rest).to_string())
        .collect()
}

/// As [`passes`], but one failure whose CUnit line starts with `known`
/// (a bug of the installed iscsi-test-cu itself) is tolerated.
async fn passes_but_for(test: &str, dataloss: bool, known: Option<&str>) -> (Summary, SimTarget) {
    let (s, text, sim) = run(test, dataloss).await;
    assert!(s.tests.ran > 0 && s.tests.ran == s.tests.total, "{test}: tests did not run: {s:?}\n{text}");
    assert!(s.asserts.ran > 0, "{test}: no assertion was checked: {s:?}\n{text}");
    assert!(s.unexpected_skips.is_empty(), "{test}: skipped: {:?}\n{text}", s.unexpected_skips);
    let failures = failure_lines(&text);
    let tolerated = failures.iter().filter(|f| known.is_some_and(|k| f.starts_with(k))).count() as u32;
    assert!(tolerated <= 1, "{test}: {failures:?}");
    assert_eq!(
        (s.suites_failed, s.tests.failed, s.asserts.failed),
        (0, tolerated, tolerated),
        "{test}: failures: {failures:?} {s:?}\n{text}"
    );
    assert_eq!(s.tests.passed + tolerated, s.tests.ran, "{test}: {s:?}\n{text}");
    assert_eq!(s.asserts.passed + tolerated, s.asserts.ran, "{test}: {s:?}\n{text}");
    (s, sim)
}

#[test]
fn summary_parsing() {
    let out = "\n[SKIPPED] PERSISTENT RESERVE IN is not implemented.\n    [SKIPPED] WRITE12 is not implemented.\n\
               Run Summary:    Type  Total    Ran Passed Failed Inactive\n\
               \x20             suites      4      4    n/a      0        0\n\
               \x20              tests     15     15     14      1        0\n\
               \x20            asserts    339    339    338      1      n/a\n";
    let s = parse_summary(out).unwrap();
    assert_eq!(s.suites_failed, 0);
    assert_eq!(s.tests, Counts { total: 15, ran: 15, passed: 14, failed: 1 });
    assert_eq!(s.asserts, Counts { total: 339, ran: 339, passed: 338, failed: 1 });
    assert_eq!(s.unexpected_skips, vec!["[SKIPPED] WRITE12 is not implemented.".to_string()]);
    assert!(parse_summary("no summary here").is_none());
    let out = "Suite: iSCSITMF\n  Test: LUNResetSimpleAsync ...FAILED\n    \
               1. test_async_lu_reset_simple.c:157  - CU_ASSERT_EQUAL(reconnect_succeeded,1)\n\n\
               Run Summary:    Type  Total\n";
    assert_eq!(
        failure_lines(out),
        vec!["test_async_lu_reset_simple.c:157  - CU_ASSERT_EQUAL(reconnect_succeeded,1)".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_cmdsn_outside_the_window_is_ignored() {
    for test in ["iSCSI.iSCSIcmdsn.iSCSICmdSnTooHigh", "iSCSI.iSCSIcmdsn.iSCSICmdSnTooLow"] {
        let (s, sim) = passes(test, false).await;
        assert_eq!(s.tests.ran, 1, "{test}");
        // The tool broke §4.2.2.1 on purpose; the sim saw it and did not answer.
        let v = sim.stats().violations;
        assert!(v.iter().any(|v| v.contains("outside the window")), "{test}: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_data_out_datasn_errors_fail_the_write() {
    let (s, sim) = passes("iSCSI.iSCSIdatasn.iSCSIDataSnInvalid", true).await;
    assert_eq!(s.tests.ran, 1);
    let v = sim.stats().violations;
    // Four writes with bad DataSNs: 0,0 then 27 then -1 then 1,0.
    for sn in ["DataSN 0 where 1", "DataSN 27 where 0", "DataSN 4294967295 where 0", "DataSN 1 where 0"] {
        assert!(v.iter().any(|v| v.contains(sn)), "{sn}: {v:?}");
    }
    // None of them reached the LUN: LBA 100 is still zero.
    assert_eq!(sim.lun_bytes(100 * 512, 1024), vec![0u8; 1024]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_residuals() {
    for (test, dataloss) in [
        ("iSCSI.iSCSIResiduals.Read10Invalid", false),
        ("iSCSI.iSCSIResiduals.Read10Residuals", false),
        ("iSCSI.iSCSIResiduals.Read12Residuals", false),
        ("iSCSI.iSCSIResiduals.Read16Residuals", false),
        ("iSCSI.iSCSIResiduals.Write10Residuals", true),
        ("iSCSI.iSCSIResiduals.Write12Residuals", true),
        ("iSCSI.iSCSIResiduals.Write16Residuals", true),
        ("iSCSI.iSCSIResiduals.WriteVerify10Residuals", true),
        ("iSCSI.iSCSIResiduals.WriteVerify12Residuals", true),
        ("iSCSI.iSCSIResiduals.WriteVerify16Residuals", true),
    ] {
        let (s, sim) = passes(test, dataloss).await;
        assert_eq!(s.tests.ran, 1, "{test}");
        assert!(sim.stats().violations.is_empty(), "{test}: {:?}", sim.stats().violations);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_task_management() {
    // libiscsi 1.19.0 (Debian's libiscsi-bin) asserts in LUNResetSimpleAsync
    // that the LUN RESET callback has run right after queuing the TMF,
    // before any answer can have arrived (fixed upstream in libiscsi
    // 5553d6b, 2020). Run on its own it fails there against any target; run
    // after AbortTaskSimpleAsync, as here, it passed in every try. That one
    // assertion is tolerated; every other one must pass.
    let known = "test_async_lu_reset_simple.c:157  - CU_ASSERT_EQUAL(reconnect_succeeded,1)";
    let (s, sim) = passes_but_for("iSCSI.iSCSITMF", true, Some(known)).await;
    assert_eq!(s.tests.ran, 2);
    assert!(sim.stats().violations.is_empty(), "{:?}", sim.stats().violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scsi_basics_of_a_ram_disk() {
    for (test, dataloss) in [
        ("SCSI.TestUnitReady", false),
        ("SCSI.Inquiry", false),
        ("SCSI.ReadCapacity10", false),
        ("SCSI.ReadCapacity16", false),
        ("SCSI.Mandatory", false),
        ("SCSI.Read10", true),
        ("SCSI.Read12", true),
        ("SCSI.Read16", true),
        ("SCSI.Write10", true),
        ("SCSI.Write12", true),
        ("SCSI.Write16", true),
        ("SCSI.WriteVerify10", true),
        ("SCSI.WriteVerify12", true),
        ("SCSI.WriteVerify16", true),
        ("SCSI.Verify10", true),
        ("SCSI.Verify12", true),
        ("SCSI.Verify16", true),
        ("SCSI.ModeSense6", true),
    ] {
        let (_, sim) = passes(test, dataloss).await;
        assert!(sim.stats().violations.is_empty(), "{test}: {:?}", sim.stats().violations);
        assert!(sim.stats().commands > 0, "{test}");
    }
}
