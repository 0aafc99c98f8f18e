#!/usr/bin/env bash
# Runs a command as root inside a qemu guest on one of Debian's kernels:
#
#   bash scripts/vm.sh PACKAGE COMMAND...
#
# PACKAGE is a Debian kernel package (linux-image-6.1.0-57-amd64, ...),
# fetched with apt into target/vm/ once. The guest boots it under software
# emulation (TCG: this machine's /dev/kvm does not run Debian's kernels)
# with 2 CPUs and 2 GiB, and sees this machine's root read-only over 9p
# under a tmpfs overlay, so the project's build outputs and tools are
# there; the kernel's own modules are bind-mounted at /lib/modules. No
# network device: the guest's tests make their own namespaces and veths.
# COMMAND runs in the project's directory with bpffs and tracefs mounted;
# its output is this script's, and so is its exit status. With
# VM_INIT=systemd, systemd is the guest's PID 1 and COMMAND runs as its
# service.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 PACKAGE COMMAND..." >&2; exit 2; }
pkg=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
vm=$root/target/vm
version=${pkg#linux-image-}
kdir=$vm/$version

need() { command -v "$1" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
need qemu-system-x86_64 qemu-system-x86
# busybox-static's: the initramfs has no libraries (Debian's busybox has).
ldd "$(command -v busybox || echo /none)" >/dev/null 2>&1 \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null
need busybox busybox-static
need cpio cpio
need xz xz-utils
need depmod kmod

if [ ! -e "$kdir/lib/modules/$version/modules.dep" ]; then
  rm -rf "$vm/$pkg.deb.d" "$kdir" && mkdir -p "$vm/$pkg.deb.d"
  (cd "$vm/$pkg.deb.d" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  deb=$(ls "$vm/$pkg.deb.d"/*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { echo "vm.sh: apt-get download $pkg failed" >&2; exit 100; }
  # Into a scratch folder first: an interrupted extraction leaves no cache.
  dpkg-deb -x "$deb" "$kdir.new" && depmod -b "$kdir.new" "$version" && mv "$kdir.new" "$kdir"
  rm -rf "$vm/$pkg.deb.d"
fi

# The initramfs: busybox, and the modules that reach the root (in
# dependency order, from modules.dep).
mods=$kdir/lib/modules/$version
order() { # the module's dependencies, then itself (nothing when built in)
  local line deps d
  line=$(grep -E "/$1\.ko(\.xz)?:" "$mods/modules.dep" || true)
  [ -n "$line" ] || return 0
  deps=${line#*:}
  for d in $deps; do order "$(basename "${d%%.ko*}")"; done
  echo "${line%%:*}"
}
init=$(mktemp -d) out=$(mktemp -d)
trap 'rm -rf "$init" "$out"' EXIT
printf '%q ' "$@" >"$out/command"
mkdir -p "$init"/{bin,proc,sys,dev,host,rw,new,mods}
cp "$(command -v busybox)" "$init/bin/busybox"
for m in virtio_pci 9pnet_virtio 9p overlay virtio_net; do order "$m"; done | awk '!seen[$0]++' >"$init/order"
# busybox's insmod takes plain modules: Debian compresses 6.12's with xz.
while read -r m; do
  case $m in
    *.xz) xz -dc "$mods/$m" >"$init/mods/$(basename "${m%.xz}")" ;;
    *) cp "$mods/$m" "$init/mods/" ;;
  esac
done <"$init/order"
sed -i 's|.*/||; s|\.xz$||' "$init/order"
cat >"$init/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in \$(cat /order); do insmod /mods/\$m; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /host
mount -t tmpfs -o size=1500m tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /new
mkdir -p /new/lib/modules/$version /new/mnt/vmout
mount --bind /host$mods /new/lib/modules/$version
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmout /new/mnt/vmout
for d in proc sys dev; do mount --move /\$d /new/\$d; done
mount -t tmpfs tmpfs /new/tmp; mount -t tmpfs tmpfs /new/run
mount -t bpf bpf /new/sys/fs/bpf; mount -t tracefs tracefs /new/sys/kernel/tracing
if [ -d /units ]; then
  cp /units/* /new/etc/systemd/system/
  # This machine's root is a container's: systemd would take that marker
  # to mean it runs in one (and ignore the kernel's command line).
  rm -f /new/.dockerenv
  exec switch_root /new /lib/systemd/systemd
fi
# The kernel loads modules (veth, nf_tables, ...) with the root's modprobe.
printf '#!/bin/busybox sh\nexec chroot /new /sbin/modprobe "\$@"\n' >/modprobe
chmod +x /modprobe; echo /modprobe >/new/proc/sys/kernel/modprobe
chroot /new /bin/bash -c 'cd "$root" && . /mnt/vmout/command' </dev/console >/dev/console 2>&1
echo \$? >/new/mnt/vmout/rc
sync
poweroff -f
EOF
chmod +x "$init/init"
# VM_INIT=systemd: the guest boots systemd as PID 1 into vm-command.target,
# whose one service runs COMMAND and powers off (what multi-user.target
# would start on this machine, a database and gettys, stays off).
append="console=ttyS0 quiet panic=-1"
if [ "${VM_INIT:-}" = systemd ]; then
  mkdir "$init/units"
  cat >"$init/units/vm-command.target" <<UNIT
[Unit]
Description=vm.sh: boot to the command only
Requires=basic.target vm-command.service
After=basic.target
AllowIsolate=yes
UNIT
  cat >"$init/units/vm-command.service" <<UNIT
[Unit]
Description=vm.sh: the command
After=basic.target
[Service]
Type=oneshot
WorkingDirectory=$root
ExecStart=/bin/bash -c '. /mnt/vmout/command; echo \$\$? >/mnt/vmout/rc; sync; systemctl --force --force poweroff'
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
UNIT
  # fstab=no: the root's /etc/fstab names this machine's disks (by UUID),
  # which the guest has not; waiting for them would end in emergency mode.
  append+=" systemd.unit=vm-command.target systemd.show_status=0 fstab=no"
fi
(cd "$init" && find . | cpio -o -H newc --quiet | gzip -1) >"$vm/initrd-$version.gz"

# VM_NICS=2: two multi-queue virtio-net NICs (eth0 and eth1 in the guest,
# 4 queue pairs each: 2 for the guest's 2 CPUs, 2 for XDP_TX) joined to
# each other and to nothing else. qemu's own hub has one queue only, so the
# join is two multi-queue taps on a bridge in a namespace made for this
# guest (no address, no route, no link to any other namespace), where qemu
# runs; it goes with the guest. Otherwise the guest has no network device.
nics=(-nic none) netns=()
if [ "${VM_NICS:-0}" = 2 ]; then
  need ip iproute2
  ns=swvm-$$-$RANDOM
  ip netns add "$ns"
  trap 'rm -rf "$init" "$out"; ip netns del "$ns" 2>/dev/null || true' EXIT
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link add swbr type bridge stp_state 0
  nics=()
  for i in 0 1; do
    ip -n "$ns" tuntap add dev "t$i" mode tap multi_queue
    ip -n "$ns" link set "t$i" master swbr up
    nics+=(-netdev "tap,id=n$i,ifname=t$i,script=no,downscript=no,vhost=off,queues=4"
      -device "virtio-net-pci,netdev=n$i,mq=on,vectors=10,mac=52:54:00:12:34:0$i,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,guest_csum=off,romfile=")
  done
  ip -n "$ns" link set swbr up
  netns=(ip netns exec "$ns")
fi
# Bounded: a guest that hangs ends here (status 124).
"${netns[@]}" timeout "${VM_TIMEOUT:-1800}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 -nographic -no-reboot \
  -kernel "$kdir/boot/vmlinuz-$version" -initrd "$vm/initrd-$version.gz" \
  -append "$append" "${nics[@]}" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$out",mount_tag=vmout,security_model=none </dev/null || exit $?
exit "$(cat "$out/rc" 2>/dev/null || echo 125)"
