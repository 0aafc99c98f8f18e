#!/usr/bin/env bash
# Installs everything synwall's build, tests and demo need on a fresh Debian 12
# machine (run as root). Idempotent: packages already present are skipped.
set -euo pipefail

APT_PACKAGES=(
  # build: BPF objects and libbpf/libxdp from source
  clang llvm libelf-dev zlib1g-dev m4 pkg-config make gcc
  # network namespaces, XDP/TC inspection, traffic tools for the tests
  iproute2 iptables ethtool tcpdump tshark python3-scapy curl iputils-ping
  # the soak: BPF map occupancy
  bpftool
  # bench scripts: pgrep (NAPI threads), chrt and taskset come with util-linux
  procps
  # metrics test: an independent parser of the Prometheus text format
  python3-prometheus-client
  # attach = "libxdp" tests: another XDP program (xdp-filter) and xdp-loader
  xdp-tools
  # the Debian package: dpkg-shlibdeps for its dependencies, dpkg-deb
  dpkg-dev
  # Debian's kernels in a qemu guest (scripts/vm.sh); systemd as the
  # guest's PID 1 (tests/vm/systemd.sh) and systemd-analyze (the package)
  qemu-system-x86 busybox-static kmod cpio systemd
  # the fleet test on BGP: BIRD on the router and two nodes, ExaBGP on one
  bird2 exabgp
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # The tests run their own BIRDs and ExaBGP in their namespaces; the
  # packages' own daemons would route in the root namespace, so they never
  # start.
  for pair in bird2:bird exabgp:exabgp; do
    if [[ " ${missing[*]} " == *" ${pair%%:*} "* ]] && command -v systemctl >/dev/null; then
      systemctl mask "${pair##*:}.service" >/dev/null 2>&1 || true
    fi
  done
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true
