//! The exporter against a real Prometheus: promtool accepts the exposition, Prometheus scrapes
//! rseq-trace tracing the workload, every dashboard panel query and every rule expression
//! returns data, many scrapers are served at once, and an exited process's series go away.

mod support;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use support::{
    kill,
    prometheus::{http_get, Prometheus},
    provoking_for, trace_bin, Lines, Workload,
};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Every `expr` of every panel target, rows included.
fn panel_exprs(panels: &Value, out: &mut Vec<(String, String)>) {
    for p in panels.as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_owned(),
                    expr.to_owned(),
                ));
            }
        }
        panel_exprs(&p["panels"], out);
    }
}

/// Grafana template variables, as the dashboard would expand them for this run.
fn substitute(expr: &str, instance: &str) -> String {
    let mut e = expr.to_owned();
    for (var, value) in [
        ("__rate_interval", "10s"),
        ("job", "rseq-trace"),
        ("instance", instance),
        ("key", ".+"),
        ("process", ".+"),
        ("comm", ".+"),
        ("binary", ".+"),
        ("pid", ".+"),
    ] {
        e = e
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("${var}"), value);
    }
    assert!(!e.contains('$'), "unsubstituted variable in {expr}");
    e
}

/// An alert expression made to return data whether or not its threshold is crossed: every
/// comparison with a number becomes a `bool` comparison (0 or 1 per series).
fn with_bool_comparisons(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        let op = [">=", "<=", "==", "!=", ">", "<"]
            .into_iter()
            .find(|op| rest.starts_with(op));
        if let Some(op) = op {
            let after = rest[op.len()..].trim_start();
            let numeric = after.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
            out.push_str(op);
            if numeric {
                out.push_str(" bool ");
            }
            rest = &rest[op.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn metrics_of(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics").expect("scrape rseq-trace");
    assert_eq!(code, 200);
    body
}

/// The first /metrics body that `ready` accepts (an event, not a guess at a delay); panics
/// after 30 s with `what` and the last body.
fn metrics_when(addr: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = metrics_of(addr);
        if ready(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}: {body}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prometheus_scrapes_and_every_dashboard_and_rule_query_returns_data() {
    support::require_root();
    let long = Workload::start(&provoking_for("2", "--duration", "30"), &[]);
    let short = Workload::start(
        &["--threads", "1", "--duration", "4", "--delay", "300"],
        &[],
    );
    let (long_pid, short_pid) = (long.pid.to_string(), short.pid.to_string());
    let (trace, log, addr) = exporter("exact", &["--pid", &long_pid, "--pid", &short_pid]);
    long.release();
    short.release();
    let counted = |pid: &str| format!("pid=\"{pid}\"");
    let body = metrics_when(&addr, "entries of both workloads", |b| {
        b.contains("rseq_entries_total{")
            && b.contains(&counted(&long_pid))
            && b.contains(&counted(&short_pid))
    });
    assert_promtool_accepts(&body);
    // Many concurrent scrapers.
    let scrapers: Vec<_> = (0..16)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || (0..5).all(|_| metrics_of(&addr).contains("rseq_entries_total{")))
        })
        .collect();
    assert!(scrapers.into_iter().all(|s| s.join().unwrap()));

    let prom = assert_every_query_has_data(&addr, "rseq_entries_total");
    // What the integration run measured: the abort ratio per key.
    for r in prom.query("rseq:abort_ratio:rate5m") {
        eprintln!("abort ratio {} = {}", r["metric"]["key"], r["value"][1]);
    }

    // The short workload has exited by now: its series are gone, the long one's remain.
    short.finish();
    let body = metrics_when(&addr, "the exited process's series to go", |b| {
        !b.contains(&counted(&short_pid))
    });
    assert!(body.contains(&format!("pid=\"{long_pid}\"")));

    // --metrics-no-cpu: the same series without the cpu label.
    let (mut lean, _lean_log, lean_addr) =
        exporter("exact", &["--pid", &long_pid, "--metrics-no-cpu"]);
    let body = metrics_of(&lean_addr);
    let entries: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("rseq_entries_total{"))
        .collect();
    assert!(
        !entries.is_empty() && entries.iter().all(|l| !l.contains("cpu=")),
        "{entries:?}"
    );
    kill(lean.id(), libc::SIGTERM);
    assert!(lean.wait().unwrap().success());

    kill(trace.id(), libc::SIGTERM);
    let out = trace.wait_with_output().unwrap();
    assert!(out.status.success(), "{:#?}", log.rest());
    kill(long.pid, libc::SIGTERM);
    let _ = long.finish();
}

/// The same queries against rseq-trace in the default mode (`sampled`): every panel and rule
/// has data, and the abort ratio per key comes from the windows' counters.
#[test]
fn prometheus_queries_return_data_in_the_default_mode() {
    support::require_root();
    let workload = Workload::start(
        &[
            "--threads",
            "2",
            "--duration",
            "40",
            "--mismatch-every",
            "50",
        ],
        &[],
    );
    let pid = workload.pid.to_string();
    let (trace, log, addr) = exporter("sampled", &["--pid", &pid]);
    workload.release();
    // Once a sampling window has counted entries.
    let body = metrics_when(&addr, "a sampling window", |b| {
        b.contains("rseq_ratio_entries_total{")
    });
    assert_promtool_accepts(&body);
    let prom = assert_every_query_has_data(&addr, "rseq_ratio_entries_total");
    // The workload makes every 50th attempt abort (its own CPU check): about 2% per key.
    for r in prom.query("rseq:abort_ratio:rate5m") {
        let ratio: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
        eprintln!("default mode: abort ratio {} = {ratio}", r["metric"]["key"]);
        assert!(ratio > 0.0 && ratio < 0.1, "{r}");
    }
    for r in prom.query("rseq:abort_ratio_upper:rate5m") {
        eprintln!(
            "default mode: upper bound {} = {}",
            r["metric"]["key"], r["value"][1]
        );
    }
    kill(trace.id(), libc::SIGTERM);
    let out = trace.wait_with_output().unwrap();
    assert!(out.status.success(), "{:#?}", log.rest());
    kill(workload.pid, libc::SIGTERM);
    let _ = workload.finish();
}

/// `rseq-trace --mode MODE ARGS --listen 127.0.0.1:0 --quiet --json`, once it serves: the
/// process, its log, and the address it listens on.
fn exporter(mode: &str, args: &[&str]) -> (std::process::Child, Lines, String) {
    let mut trace = Command::new(trace_bin())
        .args(["--mode", mode])
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--quiet", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Lines::new(trace.stderr.take().unwrap());
    let line = log.wait_for("serving metrics on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_owned();
    (trace, log, addr)
}

/// The exposition passes promtool's lint.
fn assert_promtool_accepts(body: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let lint = promtool.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// A real Prometheus scraping `addr` with the project's rules, once `first` has data: every
/// panel's and every rule's query returns data.
fn assert_every_query_has_data(addr: &str, first: &str) -> Prometheus {
    let rules = repo_file("dashboards/rules.yml");
    let prom = Prometheus::start(addr, rules.to_str().unwrap());
    prom.wait_for(first, Duration::from_secs(30));
    // Enough samples for rates over 10 s windows, and for the 5 m recording rules.
    thread::sleep(Duration::from_secs(12));
    assert_every_panel_has_data(&prom, addr);
    assert_every_rule_has_data(&prom, &rules);
    prom
}

/// Every query of the dashboard's panels returns data.
fn assert_every_panel_has_data(prom: &Prometheus, addr: &str) {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("dashboards/rseq-trace.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    panel_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 6, "dashboard has {} queries", exprs.len());
    for (title, expr) in &exprs {
        let q = substitute(expr, addr);
        assert!(
            !prom.query(&q).is_empty(),
            "panel {title:?}: no data for {q}"
        );
    }
}

/// Every recording rule and alert expression returns data (alerts with their comparisons
/// made `bool`, so that a quiet alert still answers).
fn assert_every_rule_has_data(prom: &Prometheus, rules: &std::path::Path) {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules).unwrap()).unwrap();
    let mut checked = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let query = if rule["record"].is_string() {
                expr.to_owned()
            } else {
                with_bool_comparisons(expr)
            };
            let name = rule["record"].as_str().or(rule["alert"].as_str());
            assert!(
                !prom.query(&query).is_empty(),
                "rule {name:?}: no data for {query}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} rule expressions");
}
