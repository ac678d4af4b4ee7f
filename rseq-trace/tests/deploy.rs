//! The deployment files and rules are checked by the tools that will consume them: promtool
//! (rule syntax, rule unit tests, the scrape configuration), systemd-analyze (the unit), and the
//! Kubernetes schemas (the DaemonSet, and our schema of the ServiceMonitor fields we use).

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use support::trace_bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a checker from the repository root and asserts it succeeds.
fn check(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/bootstrap.sh installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_rules_pass_promtool_and_their_unit_tests() {
    let text = check("promtool", &["check", "rules", "dashboards/rules.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
    check("promtool", &["test", "rules", "dashboards/rules.test.yml"]);
    check(
        "promtool",
        &["check", "config", "deploy/prometheus/scrape.yml"],
    );
}

#[test]
fn the_dashboard_has_a_unit_and_description_on_every_panel() {
    let d: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(repo().join("dashboards/rseq-trace.json")).unwrap(),
    )
    .unwrap();
    assert!(
        d.get("__inputs").is_none(),
        "file provisioning ignores __inputs"
    );
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in ["datasource", "job", "instance", "process", "key"] {
        assert!(vars.contains(&v), "no ${v} variable: {vars:?}");
    }
    fn walk(panels: &serde_json::Value, seen: &mut usize) {
        for p in panels.as_array().into_iter().flatten() {
            if p["type"] != "row" {
                *seen += 1;
                let title = &p["title"];
                assert!(
                    p["description"].as_str().is_some_and(|s| !s.is_empty()),
                    "{title}: no description"
                );
                assert!(
                    p["fieldConfig"]["defaults"]["unit"].is_string(),
                    "{title}: no unit"
                );
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = t["expr"].as_str().unwrap_or("");
                    if expr.contains("rate(") || expr.contains("increase(") {
                        assert!(expr.contains("$__rate_interval"), "{title}: {expr}");
                    }
                }
            }
            walk(&p["panels"], seen);
        }
    }
    let mut seen = 0;
    walk(&d["panels"], &mut seen);
    assert!(seen >= 8, "{seen} panels");
}

#[test]
fn the_systemd_unit_verifies() {
    // systemd-analyze wants ExecStart to exist: point it at the binary just built.
    let dir = std::env::temp_dir().join(format!("rseq-trace-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("rseq-trace");
    fs::copy(trace_bin(), &bin).unwrap();
    let unit = fs::read_to_string(repo().join("deploy/rseq-trace.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rseq-trace "));
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/rseq-trace ",
        &format!("ExecStart={} ", bin.display()),
    );
    let path = dir.join("rseq-trace.service");
    fs::write(&path, unit).unwrap();
    let text = check("systemd-analyze", &["verify", path.to_str().unwrap()]);
    fs::remove_dir_all(&dir).unwrap();
    assert!(
        !text.contains("rseq-trace.service:"),
        "systemd-analyze complained:\n{text}"
    );
}

#[test]
fn kubernetes_manifests_match_their_schemas() {
    let venv = Path::new("/opt/rseq-trace-tools/venv/bin");
    let validate = venv.join("kubernetes-validate");
    check(
        validate.to_str().unwrap(),
        &[
            "-k",
            "1.30.0",
            "--strict",
            "deploy/kubernetes/daemonset.yaml",
        ],
    );
    let script = "import sys, json, yaml, jsonschema\n\
                  s = json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft7Validator.check_schema(s)\n\
                  [jsonschema.validate(d, s) for d in yaml.safe_load_all(open(sys.argv[2])) if d]\n";
    check(
        venv.join("python3").to_str().unwrap(),
        &[
            "-c",
            script,
            "deploy/kubernetes/schemas/servicemonitor.schema.json",
            "deploy/kubernetes/servicemonitor.yaml",
        ],
    );
}
