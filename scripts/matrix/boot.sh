#!/usr/bin/env bash
# Boots one kernel fetched by fetch-kernel.sh under QEMU and runs RESULTS/guest.sh inside it,
# chrooted into this machine's root (read-only, with a throwaway overlay), RESULTS shared
# read-write. Prints the guest's console on stderr; RESULTS/guest.log has the command's output.
# Usage: boot.sh KERNEL_DIR RESULTS_DIR [TIMEOUT_SECS]
set -euo pipefail
kdir=${1:?usage: boot.sh KERNEL_DIR RESULTS_DIR [TIMEOUT]}
results=$(realpath "${2:?usage: boot.sh KERNEL_DIR RESULTS_DIR [TIMEOUT]}")
timeout_s=${3:-900}
here=$(dirname "$(realpath "$0")")
release=$(cat "$kdir/release")
moddir=$kdir/lib/modules/$release

# The initramfs: busybox, /init, and the closure of the modules we need from modules.dep.
initrd=$kdir/initramfs.cpio.gz
if [ ! -f "$initrd" ] || [ "$here/guest-init.sh" -nt "$initrd" ]; then
    tmp=$(mktemp -d)
    mkdir -p "$tmp"/{bin,proc,sys,dev,lib/modules}
    cp /bin/busybox "$tmp/bin/busybox"
    cp "$here/guest-init.sh" "$tmp/init"
    chmod +x "$tmp/init"
    : >"$tmp/modules.list"
    declare -A seen=()
    add_module() { # $1: path relative to moddir, from modules.dep; deps first
        local m=$1 dep
        [ -z "${seen[$m]:-}" ] || return 0
        seen[$m]=1
        for dep in $(grep -E "^$m:" "$moddir/modules.dep" | cut -d: -f2); do add_module "$dep"; done
        local plain=${m%.xz}
        plain=${plain%.zst}
        mkdir -p "$tmp/lib/modules/$(dirname "$plain")"
        case "$m" in
            *.xz) xz -dc "$moddir/$m" >"$tmp/lib/modules/$plain" ;;
            *.zst) zstd -qdc "$moddir/$m" >"$tmp/lib/modules/$plain" ;;
            *) cp "$moddir/$m" "$tmp/lib/modules/$plain" ;;
        esac
        echo "lib/modules/$plain" >>"$tmp/modules.list"
    }
    for name in virtio_pci 9pnet_virtio 9p overlay; do
        m=$(grep -oE "^[^:]*/$name\.ko(\.xz|\.zst)?:" "$moddir/modules.dep" | tr -d : || true)
        [ -n "$m" ] && add_module "$m"   # else it is built in
    done
    (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$tmp"
fi

accel=(-accel "tcg,thread=${RSEQ_TRACE_VM_TCG_THREAD:-single}" -cpu max)
# KVM only where it is real hardware virtualization (a nested software layer is ~100x slower
# than TCG): opt in with RSEQ_TRACE_VM_KVM=1.
if [ "${RSEQ_TRACE_VM_KVM:-0}" = 1 ] && [ -w /dev/kvm ]; then accel=(-accel kvm -cpu "${RSEQ_TRACE_VM_KVM_CPU:-qemu64}"); fi
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 "${accel[@]}" \
    -smp "${RSEQ_TRACE_VM_CPUS:-2}" -m "${RSEQ_TRACE_VM_MEM:-4096}" \
    -kernel "$kdir/vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1 oops=panic rseq_results=$results" \
    -nographic -no-reboot -nic none \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$results,mount_tag=results,security_model=none" </dev/null >&2
