#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine (run as root).
# Installs Debian's rustc 1.96 (rust-web) for the eBPF build, LLVM 22, bpf-linker 0.13.0
# built against it, and the test tools (QEMU and busybox for the kernel matrix). A second run
# only checks and takes seconds.
# Usage: scripts/bootstrap.sh [--bench]
#   --bench: also the tools only bench/bench.sh uses (bpftrace, as the comparison for the
#   probe-cost row; curl). Opt-in, so CI does not install bpftrace and its LLVM.
set -euo pipefail

bench=0
for arg in "$@"; do
    case "$arg" in
        --bench) bench=1 ;;
        *) echo "bootstrap: unknown argument $arg (usage: bootstrap.sh [--bench])" >&2; exit 2 ;;
    esac
done

TOOLS_ROOT="${RSEQ_TRACE_TOOLS:-/opt/rseq-trace-tools}"
BPF_LINKER_VERSION=0.13.0

log() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: must run as root (it installs Debian packages); rerun with sudo" >&2
    exit 1
fi

debs=(rustc-web cargo-web rust-web-src rust-web-clippy llvm-22-dev libzstd-dev zlib1g-dev gcc libc6-dev
      python3 jq binutils lld-22 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
      binutils-aarch64-linux-gnu
      prometheus systemd python3-venv
      qemu-system-x86 busybox-static cpio xz-utils zstd kmod gdb)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Benchmark-only tools. Not fatal: the benchmark prints "not installed" for a missing bpftrace.
if [ "$bench" -eq 1 ]; then
    missing=()
    for p in bpftrace curl; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing benchmark tools: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
            log "could not install ${missing[*]}; the benchmark reports them as not installed"
        fi
    fi
fi

# The rustup toolchain builds userspace; bpf-linker needs to be built against Debian's LLVM 22.
if ! "$TOOLS_ROOT/bin/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about 2 minutes)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked \
        --no-default-features --features llvm-22 --root "$TOOLS_ROOT"
fi

# cargo-fuzz drives the table-parser fuzz target (scripts/fuzz.sh).
if ! "$TOOLS_ROOT/bin/cargo-fuzz" --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (about 1 minute)"
    cargo install cargo-fuzz@0.13.2 --locked --root "$TOOLS_ROOT"
fi

# Offline schema checks of the Kubernetes manifests (kubernetes-validate bundles the schemas).
VENV="$TOOLS_ROOT/venv"
if ! "$VENV/bin/python3" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
    log "installing kubernetes-validate in $VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 jsonschema pyyaml
fi

# Let rustup-aware tools (aya-build) find Debian's toolchain, which has rust-src for build-std.
if ! rustup toolchain list 2>/dev/null | grep -q '^debian-web'; then
    log "linking Debian's rustc as the rustup toolchain 'debian-web'"
    rustup toolchain link debian-web /usr
fi
for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" || true
done
log "ready (bpf-linker in $TOOLS_ROOT/bin)"
