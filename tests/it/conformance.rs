//! The official MCP conformance suite (`@modelcontextprotocol/conformance`)
//! run against the gateway, fronting `metamcp-fixture --conformance` (the
//! suite's test tools, prompts and resources) over stdio with prefix mode
//! `never`, so the suite sees the names it calls.
//!
//! Two pinned releases (scripts/node/package.json):
//! - 0.1.16, the 2025-11-25 line: its whole active server suite;
//! - 0.2.0-alpha.12 (npm alias `conformance-2026`): every scenario
//!   `requirements/2026-07-28.yaml` requires of a server.
//!
//! The suite cannot send credentials, so the gateway runs with
//! `META_MCP_ANONYMOUS_LOOPBACK_ROLE=user` (see README, "Conformance").
//!
//! Every scenario must pass, except those listed below with the reason. The
//! lists are checked both ways: a listed scenario that now passes fails the
//! test too, so the list is kept true.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};

use crate::common::*;

/// The active server suite of 0.1.16 (`conformance list`, pending ones
/// excluded), all for 2025-11-25.
const SUITE_2025_11_25: &[&str] = &[
    "server-initialize",
    "logging-set-level",
    "ping",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "server-sse-multiple-streams",
    "elicitation-sep1330-enums",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
];

/// Why the gateway fails a scenario of the 2025-11-25 suite: none now. The
/// sampling and elicitation scenarios pass through a 2026-07-28 upstream
/// (the fixture answers with `input_required`, which the gateway turns into
/// real requests to the suite's legacy client).
const EXPECTED_FAILURES_2025_11_25: &[(&str, &str)] = &[];

/// The server scenarios `requirements/2026-07-28.yaml` requires.
const REQUIRED_2026_07_28: &[&str] = &[
    "server-stateless",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-error",
    "tools-call-with-progress",
    "server-sse-multiple-streams",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "sep-2164-resource-not-found",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
    "caching",
    "input-required-result-basic-elicitation",
    "input-required-result-basic-sampling",
    "input-required-result-basic-list-roots",
    "input-required-result-request-state",
    "input-required-result-multiple-input-requests",
    "input-required-result-multi-round",
    "input-required-result-missing-input-response",
    "input-required-result-non-tool-request",
    "input-required-result-result-type",
    "input-required-result-unsupported-methods",
    "input-required-result-tampered-state",
    "input-required-result-capability-check",
    "input-required-result-ignore-extra-params",
    "input-required-result-validate-input",
];

/// Why the gateway fails a scenario the 2026-07-28 revision requires: none
/// today (`server-stateless`'s diagnostic tools are the fixture's, and the
/// gateway passes each caller's clientCapabilities and logLevel on to it).
const EXPECTED_FAILURES_2026_07_28: &[(&str, &str)] = &[];

/// One scenario's outcome: the failed checks (id and message), none if it
/// passed. Warnings and informational checks do not fail a scenario, as in
/// the suite's own summary.
type Outcomes = BTreeMap<String, Vec<String>>;

/// Starts a gateway fronting the conformance fixture, runs the suite at
/// `cli` with `args` against it, and returns each scenario's outcome.
async fn run_suite(cli: &Path, args: &[&str]) -> Outcomes {
    let m = marker("conformance");
    let gw = Gateway::start(
        Options::default()
            .config(json!({
                "prefix_mode": "never",
                "mcpServers": {"conformance": {
                    "command": fixture_bin(),
                    "args": ["--conformance", "--name", m],
                }},
            }))
            .env("META_MCP_ANONYMOUS_LOOPBACK_ROLE", "user")
            .ready(),
    )
    .await;
    gw.wait_server("conformance", "ready").await;

    let out = tempfile::tempdir().expect("tempdir");
    let results = out.path().join("results");
    let mut command = tokio::process::Command::new(cli);
    command
        .arg("server")
        .arg("--url")
        .arg(gw.mcp_url())
        .args(args)
        .arg("--output-dir")
        .arg(&results)
        .current_dir(out.path())
        .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("the conformance suite finished within 10 minutes")
        .expect("run the conformance suite");
    let stdout = String::from_utf8_lossy(&run.stdout);
    // The suite exits non-zero when any scenario fails; the outcomes below
    // say which, and whether that was expected.
    eprintln!(
        "conformance {args:?} exited with {}:\n{}",
        run.status,
        stdout
            .split_once("=== SUMMARY ===")
            .map_or(stdout.as_ref(), |(_, summary)| summary)
    );
    let outcomes = read_results(&results);
    assert!(
        !outcomes.is_empty(),
        "the suite wrote no results\nstdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        gw.log_text()
    );
    outcomes
}

/// Reads `<dir>/server-<scenario>-<timestamp>/checks.json`.
fn read_results(dir: &Path) -> Outcomes {
    let mut outcomes = Outcomes::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return outcomes;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let scenario = scenario_of(&name)
            .unwrap_or_else(|| panic!("unexpected result directory {name}"))
            .to_owned();
        let path: PathBuf = entry.path().join("checks.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let checks: Vec<Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()));
        let failed = checks
            .iter()
            .filter(|c| c["status"] == "FAILURE")
            .map(|c| {
                format!(
                    "{}: {}",
                    c["id"].as_str().unwrap_or("?"),
                    c["errorMessage"].as_str().unwrap_or("")
                )
            })
            .collect();
        let previous = outcomes.insert(scenario.clone(), failed);
        assert!(previous.is_none(), "scenario {scenario} reported twice");
    }
    outcomes
}

/// `server-tools-list-2026-11-24T03-03-47-864Z` → `tools-list`.
fn scenario_of(dir: &str) -> Option<&str> {
    let rest = dir.strip_prefix("server-")?;
    // The suffix is `-` and an ISO timestamp with `:` and `.` made `-`.
    const STAMP: usize = "-2026-11-24T03-03-47-864Z".len();
    let (scenario, stamp) = rest.split_at_checked(rest.len().checked_sub(STAMP)?)?;
    (stamp.starts_with('-') && stamp.ends_with('Z') && stamp.as_bytes()[11] == b'T')
        .then_some(scenario)
}

/// Every scenario of `required` ran; each passed unless listed in
/// `expected`, and each listed one still fails. Returns the problems.
fn judge(outcomes: &Outcomes, required: &[&str], expected: &[(&str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (scenario, _) in expected {
        assert!(
            required.contains(scenario),
            "expected failure {scenario} is not a required scenario"
        );
    }
    for scenario in required {
        let listed = expected.iter().find(|(s, _)| s == scenario);
        match (outcomes.get(*scenario), listed) {
            (None, _) => problems.push(format!("{scenario}: did not run")),
            (Some(failed), None) if !failed.is_empty() => problems.push(format!(
                "{scenario}: FAILED through the gateway: {}",
                failed.join(" | ")
            )),
            (Some(failed), Some(_)) if failed.is_empty() => problems.push(format!(
                "{scenario}: passes now; remove it from the expected failures"
            )),
            (Some(failed), Some((_, why))) => {
                eprintln!(
                    "expected failure {scenario} ({why}): {}",
                    failed.join(" | ")
                );
            }
            (Some(_), None) => {}
        }
    }
    problems
}

#[tokio::test]
async fn suite_2025_11_25_through_the_gateway() {
    let Some(cli) = external(
        "METAMCP_TEST_CONFORMANCE",
        "conformance::suite_2025_11_25_through_the_gateway",
    ) else {
        return;
    };
    let outcomes = run_suite(&cli, &["--suite", "active"]).await;
    let ran: Vec<&str> = outcomes.keys().map(String::as_str).collect();
    let mut listed = SUITE_2025_11_25.to_vec();
    listed.sort_unstable();
    // A scenario the suite added or dropped must be looked at, not missed.
    assert_eq!(ran, listed, "the active suite is not the one listed here");
    let problems = judge(&outcomes, SUITE_2025_11_25, EXPECTED_FAILURES_2025_11_25);
    assert!(
        problems.is_empty(),
        "conformance 2025-11-25 through the gateway:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn requirements_2026_07_28_through_the_gateway() {
    let Some(cli) = external(
        "METAMCP_TEST_CONFORMANCE_2026",
        "conformance::requirements_2026_07_28_through_the_gateway",
    ) else {
        return;
    };
    let outcomes = run_suite(&cli, &["--requirements", "2026-07-28"]).await;
    // Scenarios run but not scored (extensions, pending ones) are reported
    // and not judged, as the requirement set says.
    for (scenario, failed) in &outcomes {
        if !REQUIRED_2026_07_28.contains(&scenario.as_str()) {
            eprintln!(
                "not scored for 2026-07-28: {scenario}: {}",
                if failed.is_empty() {
                    "passed".to_owned()
                } else {
                    format!("{} failed checks", failed.len())
                }
            );
        }
    }
    let problems = judge(&outcomes, REQUIRED_2026_07_28, EXPECTED_FAILURES_2026_07_28);
    assert!(
        problems.is_empty(),
        "conformance 2026-07-28 through the gateway:\n{}",
        problems.join("\n")
    );
}

#[test]
fn result_directories_name_their_scenario() {
    assert_eq!(
        scenario_of("server-tools-list-2026-11-24T03-03-47-864Z"),
        Some("tools-list")
    );
    assert_eq!(
        scenario_of("server-elicitation-sep1034-defaults-2026-11-24T03-03-48-513Z"),
        Some("elicitation-sep1034-defaults")
    );
    assert_eq!(
        scenario_of("client-tools-list-2026-11-24T03-03-47-864Z"),
        None
    );
    assert_eq!(scenario_of("server-x"), None);
}

#[test]
fn judging_notices_new_failures_and_new_passes() {
    let outcomes: Outcomes = [
        ("a".to_owned(), vec![]),
        ("b".to_owned(), vec!["check: broke".to_owned()]),
        ("c".to_owned(), vec![]),
        ("d".to_owned(), vec!["check: not relayed".to_owned()]),
    ]
    .into();
    let problems = judge(
        &outcomes,
        &["a", "b", "c", "d", "e"],
        &[("c", "gap"), ("d", "gap")],
    );
    assert_eq!(
        problems,
        [
            "b: FAILED through the gateway: check: broke",
            "c: passes now; remove it from the expected failures",
            "e: did not run",
        ]
    );
}
