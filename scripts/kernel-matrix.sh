#!/usr/bin/env bash
# The kernel matrix: boots each supported Debian kernel under QEMU and runs the kernel-facing
# tests (scripts/matrix/tests.tsv) inside it, against this checkout's build; then checks that a
# kernel older than the oldest supported one is refused with one clear line. Prints one table:
# kernel, mode, test, result. Exits non-zero if any row failed. Run as root, after
# scripts/bootstrap.sh (QEMU, busybox).
# Usage: scripts/kernel-matrix.sh [LINE...]   (default: 6.1 6.12 6.18 7.2 7.3 and 5.10)
# Environment: RSEQ_TRACE_KERNELS (download cache, default /var/cache/rseq-trace/kernels),
#   RSEQ_TRACE_VM_TCG_THREAD (default single: see docs/kernels.md on QEMU's multi-threaded TCG).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
SUPPORTED=(6.1 6.12 6.18 7.2 7.3)
TOO_OLD=5.10
lines=("$@")
[ "${#lines[@]}" -gt 0 ] || lines=("${SUPPORTED[@]}" "$TOO_OLD")
out=$repo/target/kernel-matrix
rm -rf "$out"
mkdir -p "$out"
log() { printf 'kernel-matrix: %s\n' "$*" >&2; }

log "building the tests"
cargo build --all-targets -q || exit 1
cargo test --no-run --message-format=json -q 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + "\t" + m["executable"])
' >"$out/bins.tsv"

rows=$out/table.tsv
: >"$rows"
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$rows"; }

run_supported() { # $1 kernel dir, $2 results dir
    cp "$out/bins.tsv" "$2/bins.tsv"
    printf '#!/bin/bash\nexec bash %q %q\n' "$repo/scripts/matrix/guest-tests.sh" "$2" >"$2/guest.sh"
    bash scripts/matrix/boot.sh "$1" "$2" 1200 >"$2/console.log" 2>&1
}

run_too_old() { # $1 kernel dir, $2 results dir: rseq-trace must refuse in one line, not attach
    cat >"$2/guest.sh" <<SH
#!/bin/bash
cd $(printf %q "$repo")
./target/debug/rseq-trace run -- ./target/debug/rseq-workload --duration 1 >/dev/null 2>$(printf %q "$2/stderr")
echo \$? >$(printf %q "$2/rc")
SH
    bash scripts/matrix/boot.sh "$1" "$2" 300 >"$2/console.log" 2>&1
}

for line in "${lines[@]}"; do
    start=$(date +%s)
    if ! kdir=$(bash scripts/matrix/fetch-kernel.sh "$line" 2>"$out/fetch-$line.log"); then
        row "$line" - - "fail (download: $(tail -1 "$out/fetch-$line.log"))" 0
        continue
    fi
    release=$(cat "$kdir/release")
    res=$out/$release
    mkdir -p "$res"
    if [ "$line" = "$TOO_OLD" ]; then
        run_too_old "$kdir" "$res"
        rc=$(cat "$res/rc" 2>/dev/null || echo none)
        n=$(grep -c . "$res/stderr" 2>/dev/null || echo 0)
        msg=$(head -1 "$res/stderr" 2>/dev/null | cut -c1-150)
        if [ "$rc" != none ] && [ "$rc" != 0 ] && [ "$n" = 1 ]; then
            row "$release" all "refused before attaching: $msg" pass $(($(date +%s) - start))
        else
            row "$release" all "refused before attaching" "fail (exit $rc, $n lines: $msg)" $(($(date +%s) - start))
        fi
        continue
    fi
    log "$release: booting"
    run_supported "$kdir" "$res"
    if [ ! -s "$res/results.tsv" ]; then
        row "$release" - - "fail (no results: $(grep -a -m1 -iE 'panic|error|oops' "$res/console.log" | cut -c1-100))" $(($(date +%s) - start))
        continue
    fi
    while IFS=$'\t' read -r mode test result secs; do
        row "$release" "$mode" "$test" "$result" "$secs"
    done <"$res/results.tsv"
    expected=$(grep -cvE '^(#|$)' scripts/matrix/tests.tsv)
    got=$(wc -l <"$res/results.tsv")
    [ "$got" -ge "$expected" ] || row "$release" - - "fail (the VM stopped after $got of $expected tests)" 0
    log "$release: done in $(($(date +%s) - start)) s"
done

echo
echo "== kernel matrix (QEMU TCG, ${RSEQ_TRACE_VM_TCG_THREAD:-single}-threaded; logs in target/kernel-matrix/)"
python3 - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
head = ["kernel", "mode", "test", "result", "s"]
w = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
fmt = lambda r: "  ".join(r[i].ljust(w[i]) for i in range(4)) + "  " + r[4].rjust(4)
print(fmt(head))
for r in rows:
    print(fmt(r))
p = sum(r[3] == "pass" for r in rows)
f = sum(r[3].startswith("fail") for r in rows)
s = sum(r[3].startswith("skip") for r in rows)
print(f"kernel matrix: {p} passed, {f} failed, {s} skipped")
PY
! grep -qP '\tfail' "$rows"
