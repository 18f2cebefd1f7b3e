//! End-to-end tests once more with every simulated carrier reached through its real HTTP adapter
//! and wire simulator (China Mobile OneLink, China Unicom Control Center, China Telecom CMP)
//! instead of function calls: the same tests must pass unchanged. It re-runs this test binary as
//! a child process with `SIMGATE_TEST_CARRIER_TRANSPORT=http`, so `cargo test` alone covers both
//! transports.
//!
//! The default suite reruns one pass per platform: each carrier's fifteen-month card life, the
//! card operations under each carrier's recovery rules, the diagnoses with their remedies, and
//! the journal's lost answers and outages. The long drills (`SIMGATE_TEST_LONG_DRILLS=1`)
//! rerun the whole suite.

use std::process::Command;

use crate::helpers::{long_drills, LONG_DRILLS_ENV, TRANSPORT_ENV};

/// The tests of the default over-HTTP pass (libtest name filters).
const PER_PLATFORM: [&str; 4] = [
    "lifecycle::a_china_",
    "cards_ops::",
    "diagnosis::",
    "journal::",
];

#[test]
fn end_to_end_tests_pass_with_the_carriers_reached_over_http() {
    if std::env::var(TRANSPORT_ENV).is_ok() {
        // This is the inner run (or a run that chose its transport): nothing to repeat.
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let whole = long_drills();
    let filters: &[&str] = if whole { &[] } else { &PER_PLATFORM };
    let out = Command::new(exe)
        .args(filters)
        .args([
            // The process-level tests start `simgate serve` with its default transport.
            "--skip",
            "crash::",
            "--skip",
            "simulate::",
            "--skip",
            "over_http::",
            // These choose their transport themselves (each platform's adapter against its
            // wire simulator, or the store alone): a rerun would repeat them unchanged.
            "--skip",
            "contract::",
            "--skip",
            "wire_",
            "--skip",
            "batch_calls::",
            "--skip",
            "accounts::",
            "--skip",
            "store_suite::",
        ])
        .env(TRANSPORT_ENV, "http")
        // The rerun is for the transport: its tests run at their default sizes (the long drills'
        // sizes already ran once, in process).
        .env_remove(LONG_DRILLS_ENV)
        // The PostgreSQL half already ran once; over HTTP the store makes no difference.
        .env_remove("SIMGATE_TEST_POSTGRES_URL")
        .output()
        .expect("run the suite over HTTP");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        out.status.success(),
        "over HTTP:\n{}\n{}",
        stdout
            .lines()
            .filter(|l| l.contains("FAILED") || l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    // A run that skipped everything would also succeed.
    let passed: usize = summary
        .split_whitespace()
        .skip_while(|w| *w != "ok.")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Each carrier's card life, and more than one test of each other filter.
    let at_least = if whole { 100 } else { 12 };
    assert!(
        passed >= at_least,
        "only {passed} tests ran over HTTP: {summary}"
    );
    eprintln!("over HTTP: {summary}");
}
