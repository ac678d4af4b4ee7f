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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary, so the total is not hidden behind the last one.
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "all tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
