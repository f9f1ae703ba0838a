//! Failure resilience. So far this binary holds the check that the worst-case drain on
//! SIGTERM fits inside every compose `stop_grace_period` (a rolling restart that kills a
//! node before it drained would lose its in-flight work); the network-namespace fault
//! scenarios of issue 10 are not written yet (see docs/RESILIENCE.md).

#[path = "chaos/compose_budget.rs"]
mod compose_budget;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compose_budget::{
    compose_files, env_values, help_default, parse_compose_duration, stop_grace_periods,
};

/// What a node may still need after its drain grace: the consumer wait is bounded by the
/// grace itself, then `3 * gossip_interval` of "draining" gossip (src/runtime/mod.rs),
/// then QUIC close and gossip shutdown, which get this much at most before compose's
/// SIGKILL would land.
const TEARDOWN_MARGIN: Duration = Duration::from_secs(5);

/// The longest a node takes from SIGTERM to exit (see `src/runtime/mod.rs`: every drain
/// step after the consumer wait is bounded by what is left of `drain_grace`, the gossip
/// announcement is not), plus the teardown margin.
fn worst_case_drain(drain_grace: Duration, gossip_interval: Duration) -> Duration {
    drain_grace + gossip_interval * 3 + TEARDOWN_MARGIN
}

/// `Err` naming the numbers when the drain does not fit.
fn check_fits(stop_grace: Duration, drain: Duration, gossip: Duration) -> Result<(), String> {
    let needed = worst_case_drain(drain, gossip);
    if needed <= stop_grace {
        Ok(())
    } else {
        Err(format!(
            "worst-case drain {needed:?} (grace {drain:?} + 3 x gossip {gossip:?} + \
             teardown {TEARDOWN_MARGIN:?}) exceeds stop_grace_period {stop_grace:?}"
        ))
    }
}

fn node_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spheromesh"))
        .args(["node", "--help"])
        .env_clear()
        .output()
        .expect("spheromesh node --help");
    assert!(out.status.success(), "node --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

#[test]
fn worst_case_drain_fits_every_compose_stop_grace_period() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compose");
    let files = compose_files(&dir);
    let help = node_help();
    let default_drain = help_default(&help, "--drain-grace-secs");
    let default_gossip = help_default(&help, "--gossip-interval-ms");

    let graces = stop_grace_periods(&files);
    assert!(
        !graces.is_empty(),
        "no stop_grace_period in {files:?}: compose would SIGKILL after its 10 s default"
    );
    let mut drains: Vec<u64> = env_values(&files, "DRAIN_GRACE_SECS")
        .into_iter()
        .map(|v| v.unwrap_or(default_drain))
        .collect();
    drains.push(default_drain);
    let mut gossips: Vec<u64> = env_values(&files, "GOSSIP_INTERVAL_MS")
        .into_iter()
        .map(|v| v.unwrap_or(default_gossip))
        .collect();
    gossips.push(default_gossip);
    let drain = Duration::from_secs(*drains.iter().max().expect("a drain value"));
    let gossip = Duration::from_millis(*gossips.iter().max().expect("a gossip value"));

    let broken: Vec<String> = graces
        .iter()
        .filter_map(|g| {
            check_fits(g.period, drain, gossip)
                .err()
                .map(|why| format!("{}:{}: {why}", g.file.display(), g.line))
        })
        .collect();
    eprintln!(
        "drain budget: {} stop_grace_period(s), longest drain {drain:?}, gossip {gossip:?}, \
         worst case {:?}",
        graces.len(),
        worst_case_drain(drain, gossip)
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_budget_check_refuses_a_grace_period_that_is_too_short() {
    let drain = Duration::from_secs(30);
    let gossip = Duration::from_millis(200);
    assert!(check_fits(parse_compose_duration("40s"), drain, gossip).is_ok());
    // Exactly the drain grace leaves nothing for gossip and teardown: refused.
    assert!(check_fits(parse_compose_duration("30s"), drain, gossip).is_err());
    assert!(check_fits(parse_compose_duration("35s"), drain, gossip).is_err());
}

#[test]
fn compose_durations_parse_like_compose() {
    assert_eq!(parse_compose_duration("40s"), Duration::from_secs(40));
    assert_eq!(parse_compose_duration("1m30s"), Duration::from_secs(90));
    assert_eq!(parse_compose_duration("500ms"), Duration::from_millis(500));
    assert_eq!(parse_compose_duration("2m"), Duration::from_secs(120));
}
