#!/bin/busybox sh
# /init of the matrix's initramfs (busybox): loads the kernel's own virtio and 9p modules, mounts
# the host's root read-only over virtio-9p with a tmpfs overlay on top (so tests may write
# anywhere, and nothing reaches the host), mounts the results folder read-write at its host
# path, chroots and runs the command named on the kernel command line; then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "/$m" 2>/dev/null; done
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
results=$(arg rseq_results)
mkdir -p /lower /upper /root9p
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host /lower
mount -t tmpfs -o size=6g tmpfs /upper
mkdir -p /upper/u /upper/w
if insmod_ok=$(grep -q overlay /proc/filesystems && echo yes) && [ -n "$insmod_ok" ] &&
    mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /root9p; then
    :
else
    echo "guest: no overlay file system, the host root stays read-only" >&2
    mount --bind /lower /root9p
fi
r=/root9p
mount -t tmpfs tmpfs $r/tmp
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs tmpfs $r/dev/shm
mount -t tmpfs tmpfs $r/run
mount -t tracefs nodev $r/sys/kernel/tracing 2>/dev/null
mount -t debugfs nodev $r/sys/kernel/debug 2>/dev/null
mount -t bpf bpf $r/sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup 2>/dev/null
mkdir -p "$r$results"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "$r$results"
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null
echo "guest: $(uname -r) up, running $results/guest.sh"
chroot $r /bin/bash "$results/guest.sh" >"$r$results/guest.log" 2>&1
echo "guest: exit $?"
sync
poweroff -f
