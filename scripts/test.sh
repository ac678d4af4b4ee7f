#!/usr/bin/env bash
# Sets up a fresh machine (idempotent) and runs every check and test, as CI does. Run as root:
# the integration tests load eBPF programs and attach real uprobes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== build (the tests run the built rseq-workload and rseq-trace binaries)"
cargo build --all-targets
echo "== cargo test"
# One test at a time: the integration tests measure a real workload on a 2-CPU machine.
cargo test -- --test-threads=1
