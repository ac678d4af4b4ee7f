#!/usr/bin/env bash
# Fuzzes the ELF table parser: `scripts/fuzz.sh [SECONDS]` (default 60; CI runs 60).
# Seeds are the test fixtures (small ELF files of every table format and link mode, built by
# `cargo test`) when present.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export PATH=/opt/rseq-trace-tools/bin:$PATH
# cargo-fuzz needs -Z flags; the eBPF object is not needed by the parser (AYA_BUILD_SKIP).
export RUSTC_BOOTSTRAP=1 AYA_BUILD_SKIP=1
corpus=fuzz/corpus/table_parser
mkdir -p "$corpus"
# Inputs that once crashed the parser stay in the corpus, so they are re-run every time.
cp fuzz/regressions/* "$corpus/" 2>/dev/null || true
for seed in target/tmp/rseq-fixtures/*; do
    case "$seed" in *.stamp) continue ;; esac
    [ -f "$seed" ] && cp "$seed" "$corpus/seed-$(basename "$seed")"
done
cargo fuzz run table_parser --fuzz-dir fuzz "$corpus" -- \
    -max_total_time="$seconds" -max_len=131072 -rss_limit_mb=4096 -print_final_stats=1
