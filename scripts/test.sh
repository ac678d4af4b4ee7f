#!/usr/bin/env bash
# Sets up a fresh machine (idempotent) and runs every check and test, as CI does. Run as root:
# the integration tests load eBPF programs and attach real uprobes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -- -D warnings (with the benchmark rig too)"
cargo clippy --all-targets --features rseq-trace/bench -- -D warnings
echo "== cargo clippy over the eBPF crate (bpfel-unknown-none, with and without the bench program)"
for features in "" bench; do
    (cd rseq-trace-ebpf && RUSTC_BOOTSTRAP=1 CARGO_ENCODED_RUSTFLAGS='--cfg=bpf_target_arch="x86_64"' \
        rustup run debian-web cargo clippy -q --target bpfel-unknown-none -Z build-std=core \
        --features "$features" --target-dir ../target/ebpf-clippy -- -D warnings)
done
echo "== build (the tests run the built rseq-workload and rseq-trace binaries)"
cargo build --all-targets
# Test binaries that touch no kernel (unit tests, table reading, fixtures, deployment files): in
# parallel. Every other binary in rseq-trace/tests loads eBPF and measures a real workload on the
# machine's CPUs: one test at a time. --no-fail-fast: a failure never hides the later binaries.
offline=(list fixtures_build deploy)
# rseq-workload's own tests (library mode, migrations, --steady-after): real threads, no eBPF.
workload_tests=(library_mode migration steady)
kernel=()
for t in rseq-trace/tests/*.rs; do
    name=$(basename "$t" .rs)
    [[ " ${offline[*]} " == *" $name "* ]] || kernel+=(--test "$name")
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
echo "== cargo test: offline tests, in parallel"
cargo test --no-fail-fast --lib --bins --examples "${offline[@]/#/--test=}" \
    "${workload_tests[@]/#/--test=}" 2>&1 | tee "$log"
offline_status=${PIPESTATUS[0]}
echo "== cargo test: kernel tests, one at a time (root)"
cargo test --no-fail-fast -p rseq-trace "${kernel[@]}" -- --test-threads=1 2>&1 | tee -a "$log"
kernel_status=${PIPESTATUS[0]}
set -e

echo "== aarch64: the workload's critical sections must compile for arm64 too"
RUSTC_BOOTSTRAP=1 rustup run debian-web cargo check -q -p rseq-workload -p rseq-marker \
    --target aarch64-unknown-linux-gnu -Z build-std=std,panic_abort \
    --target-dir target/aarch64-check

echo "== fuzz the table parser for 60 s (scripts/fuzz.sh SECONDS for longer)"
fuzz_log=$(mktemp)
trap 'rm -f "$log" "$fuzz_log"' EXIT
set +e
bash scripts/fuzz.sh 60 >"$fuzz_log" 2>&1
fuzz_status=$?
set -e
grep -E "DONE|Done [0-9]+ runs|stat::number_of_executed_units" "$fuzz_log" || true
if [ "$fuzz_status" -ne 0 ]; then
    tail -40 "$fuzz_log"
    echo "fuzzing the table parser failed (a crash is saved under fuzz/artifacts/)"
    exit 1
fi

echo "== kernel matrix: the kernel-facing tests in every supported kernel, under QEMU"
matrix_log=$(mktemp)
trap 'rm -f "$log" "$fuzz_log" "$matrix_log"' EXIT
set +e
bash scripts/kernel-matrix.sh 2>&1 | tee "$matrix_log"
matrix_status=${PIPESTATUS[0]}
set -e

# One closing line over every test binary and the matrix, so no total hides behind another.
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     /^kernel matrix: [0-9]+ passed/ { p += $3; f += $5; s += $7 }
     END { printf "all tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" "$matrix_log"
for status in "$offline_status" "$kernel_status" "$matrix_status"; do
    [ "$status" -eq 0 ] || exit "$status"
done
