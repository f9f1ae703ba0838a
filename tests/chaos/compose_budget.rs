//! Reads the drain budget out of `compose/*.yml` and the node's `--help`: every
//! `stop_grace_period`, every `DRAIN_GRACE_SECS` / `GOSSIP_INTERVAL_MS` a compose file sets
//! (or its `${VAR:-default}`), and the binary's own defaults for the ones it does not.
//!
//! A line scan, not a YAML parser: the keys are scalar settings that compose writes one per
//! line, and scanning every line finds them whatever the services (or anchors) are called.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// One `stop_grace_period` found in a compose file.
#[derive(Debug)]
pub struct StopGrace {
    pub file: PathBuf,
    pub line: usize,
    pub period: Duration,
}

/// Every compose file under `dir` (`*.yml`, `*.yaml`), sorted.
pub fn compose_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The value of `key: value` on `line` (comment and quotes stripped), if the line sets it.
fn setting<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let line = line.split(" #").next().unwrap_or(line).trim();
    let line = line.strip_prefix("- ").unwrap_or(line);
    let rest = line.strip_prefix(key)?;
    let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
    Some(value.trim().trim_matches('"').trim_matches('\''))
}

/// A compose duration (`40s`, `1m30s`, `500ms`, `2m`).
pub fn parse_compose_duration(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_alphabetic() {
                unit.push(next);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("duration {text:?}"));
        number.clear();
        let secs = match unit.as_str() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            other => panic!("unit {other:?} in duration {text:?}"),
        };
        total += Duration::from_secs_f64(secs);
    }
    assert!(number.is_empty(), "duration {text:?} lacks a unit");
    total
}

/// Every `stop_grace_period` in `files`.
pub fn stop_grace_periods(files: &[PathBuf]) -> Vec<StopGrace> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read compose file");
        for (i, line) in text.lines().enumerate() {
            if let Some(value) = setting(line, "stop_grace_period") {
                found.push(StopGrace {
                    file: file.clone(),
                    line: i + 1,
                    period: parse_compose_duration(value),
                });
            }
        }
    }
    found
}

/// Every number a compose file gives `var`: a literal, or the default of `${var:-N}`.
/// A `${var}` without a default is reported as `None` (the binary's default applies).
pub fn env_values(files: &[PathBuf], var: &str) -> Vec<Option<u64>> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read compose file");
        for line in text.lines() {
            let Some(value) = setting(line, var) else {
                continue;
            };
            let literal = value
                .strip_prefix("${")
                .and_then(|v| v.strip_suffix('}'))
                .map_or(Some(value), |inner| {
                    inner.split_once(":-").map(|(_, default)| default)
                });
            found.push(literal.map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{var} = {value:?} is not a number"))
            }));
        }
    }
    found
}

/// The `[default: N]` clap prints for `--flag` in `help`.
pub fn help_default(help: &str, flag: &str) -> u64 {
    let start = help
        .find(&format!("{flag} <"))
        .unwrap_or_else(|| panic!("{flag} missing from --help"));
    let after = &help[start..];
    let default = after
        .find("[default: ")
        .unwrap_or_else(|| panic!("{flag} has no default in --help"));
    let value = &after[default + "[default: ".len()..];
    value[..value.find(']').expect("]")]
        .parse()
        .unwrap_or_else(|_| panic!("{flag} default is not a number"))
}
