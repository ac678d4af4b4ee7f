#!/usr/bin/env bash
# Fetches one Debian kernel by its line (6.1, 6.12, 6.18, 7.2, 7.3, 5.10) and extracts it into
# $CACHE/<version>/ (vmlinuz, lib/modules/<release>/): prints that folder on stdout.
# The apt sources are derived at run time from this machine's own apt sources: the same URIs,
# only the suite changes. Nothing is installed; packages are only downloaded and unpacked.
# Usage: fetch-kernel.sh LINE
set -euo pipefail

line=${1:?usage: fetch-kernel.sh LINE}
CACHE=${RSEQ_TRACE_KERNELS:-/var/cache/rseq-trace/kernels}
APT=$CACHE/apt
log() { printf 'fetch-kernel: %s\n' "$*" >&2; }

# line -> the suites that carry it and the package name pattern of its image (or binary).
case "$line" in
    5.10) suites="bullseye bullseye-security"; pattern='linux-image-5\.10\.0-[0-9]+-amd64' ;;
    6.1) suites="bookworm bookworm-security"; pattern='linux-image-6\.1\.0-[0-9]+-amd64' ;;
    6.12) suites="trixie trixie-security"; pattern='linux-image-6\.12\.[0-9]+\+deb13-amd64' ;;
    6.18) suites="trixie-backports"; pattern='linux-image-6\.18\.[0-9]+\+deb13-amd64' ;;
    7.2) suites="sid"; pattern='linux-binary-7\.2\.[0-9]+\+deb1[0-9]-amd64' ;;
    7.3) suites="trixie-backports"; pattern='linux-binary-7\.3\.[0-9]+\+deb13-amd64' ;;
    *) echo "fetch-kernel: unknown kernel line $line (5.10 6.1 6.12 6.18 7.2 7.3)" >&2; exit 2 ;;
esac

# deb lines for the wanted suites, with the URIs of this machine's own sources: the main
# archive's URI for plain suites, the security archive's for -security suites.
sources_file() {
    python3 - "$@" <<'PY'
import glob, re, sys
main = security = keyring = None
for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
    for block in open(path).read().split("\n\n"):
        fields = {}
        for l in block.splitlines():
            if l.startswith("#") or ":" not in l:
                continue
            k, v = l.split(":", 1)
            fields[k.strip()] = v.strip()
        uri, suites = fields.get("URIs", "").split(), fields.get("Suites", "")
        if not uri:
            continue
        keyring = keyring or fields.get("Signed-By")
        if "-security" in suites:
            security = security or uri[0]
        else:
            main = main or uri[0]
for path in ["/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*.list"):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for l in lines:
        m = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)", l)
        if m:
            if "-security" in m.group(3):
                security = security or m.group(2)
            else:
                main = main or m.group(2)
if not main:
    sys.exit("fetch-kernel: no Debian apt source on this machine to derive a mirror from")
opt = f"[signed-by={keyring}] " if keyring else ""
for suite in sys.argv[1:]:
    if suite.endswith("-security"):
        if security:
            print(f"deb {opt}{security} {suite} main")
    else:
        print(f"deb {opt}{main} {suite} main")
PY
}

dir=$APT/$line
mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
# shellcheck disable=SC2086
sources_file $suites >"$dir/sources.list"
opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Dir::State::status=/dev/null
      -o APT::Architecture=amd64 -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
      -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
      -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
      -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
      -o Acquire::Languages=none -o Acquire::Retries=3 -o APT::Sandbox::User=root)

pick() {
    apt-cache "${opts[@]}" pkgnames 2>/dev/null | grep -E "^$pattern\$" | sort -V | tail -1
}
pkg=${RSEQ_TRACE_KERNEL_PACKAGE:-}
[ -n "$pkg" ] || pkg=$(pick) || true
if [ -z "$pkg" ] || [ -n "${RSEQ_TRACE_KERNEL_REFRESH:-}" ]; then
    log "updating the package lists of $suites"
    apt-get "${opts[@]}" -qq update >&2
    pkg=$(pick)
fi
[ -n "$pkg" ] || { echo "fetch-kernel: no package matching $pattern in $suites" >&2; exit 1; }
version=${pkg#linux-image-}
version=${version#linux-binary-}
out=$CACHE/$version
if [ -f "$out/.complete" ]; then
    echo "$out"
    exit 0
fi
# Debian splits kernels from 6.19 on: linux-binary (vmlinuz), linux-modules, linux-base.
pkgs=("$pkg")
case "$pkg" in
    linux-binary-*) pkgs+=("linux-modules-$version" "linux-base-$version") ;;
esac
log "downloading ${pkgs[*]}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get "${opts[@]}" -qq download "${pkgs[@]}" >&2)
rm -rf "$out"
mkdir -p "$out/root"
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$out/root"
done
# /boot/vmlinuz-R up to 6.18; the modules folder's vmlinuz from 6.19 on.
vmlinuz=$(find "$out/root" \( -path '*/boot/vmlinuz-*' -o -path '*/lib/modules/*/vmlinuz' \) | head -1)
[ -n "$vmlinuz" ] || { echo "fetch-kernel: no vmlinuz in ${pkgs[*]}" >&2; exit 1; }
mv "$vmlinuz" "$out/vmlinuz"
moddir=$(find "$out/root" -maxdepth 3 -type d -path '*/lib/modules' | head -1)
release=$(basename "$(find "$moddir" -mindepth 1 -maxdepth 1 -type d | head -1)")
mkdir -p "$out/lib/modules"
mv "$moddir/$release" "$out/lib/modules/$release"
# linux-base carries modules.builtin and modules.order from 6.19 on.
for f in modules.builtin modules.builtin.modinfo modules.order; do
    found=$(find "$out/root" -name "$f" -path "*$release*" | head -1)
    [ -z "$found" ] || [ -e "$out/lib/modules/$release/$f" ] || mv "$found" "$out/lib/modules/$release/"
done
rm -rf "$out/root"
depmod -b "$out" "$release" 2>/dev/null || depmod -b "$out" "$release"
echo "$release" >"$out/release"
echo "$pkg" >"$out/package"
touch "$out/.complete"
echo "$out"
