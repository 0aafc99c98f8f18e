#!/usr/bin/env bash
# The netns tests that matter on Debian's own kernels, each kernel booted in
# a qemu guest by scripts/vm.sh (software emulation, 2 CPUs):
#   Linux 6.1 (Debian 12's own): the XDP program verifies, and proxy mode
#     with the repair engine (what "auto" picks there) serves, honours the
#     host's INPUT rules and never rebuilds a connection twice; and
#     (tests/vm/old_kernel.sh) kernel mode is refused with its pointer to
#     proxy mode, IPv4 and IPv6 clients are served with SYN-ACKs from XDP
#     and from the workers, and a SIGKILLed synwall leaves no program;
#   Linux 6.12 (Debian 12's bookworm-security): kernel mode with the kfunc
#     hand-off serves, keeps the ACK's request, and small-MSS clients,
#     proxy mode serves through the kfunc and through the repair engine; and
#     on a real NIC driver (tests/vm/virtio_nic.sh: two multi-queue
#     virtio-net NICs), every receive queue XDP brings is served, native
#     XDP's and the workers' SYN-ACKs leave and connections complete, in
#     kernel mode and through the repair engine;
#     and with systemd as the guest's PID 1 (tests/vm/systemd.sh), the
#     Debian package's unit does what it promises (start, reload, journal,
#     watchdog, stop, hardening, a namespaced server); and libxdp's
#     dispatcher (whose extensions 6.12 checks) holds synwall beside
#     Debian's xdp-filter, in either order, failing open after a crash.
# The newest package of each series is taken. Tests bound by load (200
# concurrent clients, bulk) are left out or run with 20 clients: an
# emulated guest is too slow for them, with or without synwall.
# Run as root:  bash scripts/test-kernels.sh   (after cargo build --bins)
# SYNWALL_SKIP_KERNELS=1 skips it, saying so (never silently).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SYNWALL_SKIP_KERNELS:-}" ]; then
  echo "test-kernels: SKIPPED (SYNWALL_SKIP_KERNELS is set)"
  exit 0
fi

newest() { apt-cache search --names-only "$1" | awk '{print $1}' | sort -V | tail -1; }
k61=${KERNEL_61:-$(newest '^linux-image-6\.1\.0-[0-9]+-amd64$')}
k612=${KERNEL_612:-$(newest '^linux-image-6\.12\.[0-9]+\+deb12-amd64$')}
built=$(cargo test --locked --test handoff_netns --test datapath_netns --no-run 2>&1) || { echo "$built" >&2; exit 1; }
# The package of this tree, for the systemd guest (quick when it is built).
bash scripts/package.sh >/dev/null
test_bin() { sed -n "s/.*Executable tests\/$1.rs (\(.*\))$/\1/p" <<<"$built"; }
bin=$(test_bin handoff_netns) dbin=$(test_bin datapath_netns)
[ -x "$bin" ] && [ -x "$dbin" ] || { echo "test-kernels: no test binaries in: $built" >&2; exit 1; }
[ -n "$k61" ] && [ -n "$k612" ] || {
  echo "test-kernels: Debian's 6.1 and 6.12 kernel packages are not in apt's index (bookworm and bookworm-security)" >&2
  exit 1
}

fail=0
run() { # KERNEL COMMAND...
  local k=$1; shift
  echo "--> $k: $*"
  local out rc=0
  out=$(bash scripts/vm.sh "$k" "$@" 2>&1) || rc=$?
  grep -E '^test |^test result|panicked|assertion|left:|right:|^served|^driver|^ok:|^FAIL|^systemd:|^dpkg|^status:' <<<"$out" || true
  if [ "$rc" -ne 0 ]; then
    echo "test-kernels: $k: exit status $rc; the guest said:" >&2
    tail -40 <<<"$out" >&2
    fail=1
  fi
}
run "$k61" "$bin" --test-threads 1 the_repair_engine_keeps_the_acks_request \
  a_late_copy_of_a_handshake_ack the_repair_engine_honours_the_hosts_input_rules \
  dead_upstream_gives_a_prompt_close_with_the_repair_engine
run "$k61" bash tests/vm/old_kernel.sh
# 20 concurrent clients, not 200: the emulated guest is too slow for 200.
run "$k612" env SYNWALL_CONCURRENT_CLIENTS=20 "$bin" --test-threads 1 request_in_the_handshake_ack_is_not_lost \
  clients_with_a_small_mss server_behind_synacks_from_xdp faulty_acks_with_valid_cookies \
  server_behind_proxy_mode
run "$k612" "$dbin" --test-threads 1 libxdp_
VM_NICS=2 run "$k612" bash tests/vm/virtio_nic.sh
VM_INIT=systemd run "$k612" bash tests/vm/systemd.sh
exit $fail
