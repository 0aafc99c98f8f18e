#!/usr/bin/env bash
# Inside a guest of scripts/vm.sh with VM_NICS=2 (two multi-queue
# virtio-net NICs joined to each other, and nothing else): synwall on a
# real NIC driver. eth0 goes to a server namespace, eth1 to a client
# namespace; synwall takes eth0 in native XDP with its defaults but for
# the phases below. Attaching XDP makes virtio_net use twice the queue
# pairs (one per CPU for XDP_TX), and those receive too, but AF_XDP
# cannot send there: synwall has XDP answer their SYNs, and with the
# repair engine serves them for ACKs, so no SYN meets a queue without an
# answer and no ACK is lost.
#   1. synack = "xdp", kernel mode (kfunc): a handshake completes only if
#      virtio_net sends XDP_TX answers;
#   2. synack = "afxdp", kernel mode: the workers' AF_XDP answers leave,
#      and the added queues' SYNs go to the kernel, which synwall says;
#   3. the defaults (auto) in proxy mode with the repair engine: on a NIC
#      whose driver the answer watch reads, answers are known to leave, so
#      XDP answers every SYN first (no worker's wake-up per SYN), and the
#      engine rebuilds every connection, from any queue.
# Each phase: XDP native, 20 requests served, where the SYN-ACKs came from,
# the hand-offs, the answer watch. `synwall status` says copy or zero-copy.
#   bash tests/vm/virtio_nic.sh        (as root, in the guest)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
SW=${SYNWALL:-$root/target/debug/synwall}
srv=swv-srv-$$ cli=swv-cli-$$
dir=$(mktemp -d)
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$dir/synwall.log" ]; then echo "synwall's log:"; tail -30 "$dir/synwall.log"; fi
  if [ -n "${swpid:-}" ]; then kill "$swpid" 2>/dev/null || true; wait "$swpid" 2>/dev/null || true; fi
  if [ -n "${webpid:-}" ]; then kill "$webpid" "$upid" 2>/dev/null || true; fi
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$srv"; ip netns add "$cli"
ip link set eth0 netns "$srv"; ip link set eth1 netns "$cli"
ip -n "$srv" addr add 198.18.0.1/24 dev eth0; ip -n "$srv" link set eth0 up; ip -n "$srv" link set lo up
ip -n "$cli" addr add 198.18.0.2/24 dev eth1; ip -n "$cli" link set eth1 up; ip -n "$cli" link set lo up
echo "driver: $(ip netns exec "$srv" ethtool -i eth0 | sed -n 's/^driver: //p'), queue pairs in use: $(ip netns exec "$srv" ethtool -l eth0 | awk '/^Combined/ {n=$2} END {print n}') (of $(ip netns exec "$srv" ethtool -l eth0 | awk '/^Combined/ {print $2; exit}'))"

mkdir -p "$dir/www"; echo "hello from behind synwall" >"$dir/www/index.html"
ip netns exec "$srv" python3 -m http.server 80 --bind 198.18.0.1 --directory "$dir/www" >/dev/null 2>&1 &
webpid=$!
# Proxy mode's upstream (synwall's proxy takes port 80 then).
ip netns exec "$srv" python3 -m http.server 8080 --bind 198.18.0.1 --directory "$dir/www" >/dev/null 2>&1 &
upid=$!
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret"; chmod 600 "$dir/secret"

# One run of synwall: `synack = $1`, hand-off `mode = $2` (`engine = $3`).
phase() {
  cat >"$dir/synwall.toml" <<CFG
[datapath]
interface = "eth0"
synack = "$1"
stats_socket = "$dir/stats.sock"
[cookie]
secret_file = "$dir/secret"
[handoff]
mode = "$2"
engine = "$3"
upstreams = ["198.18.0.1:8080"]
CFG
  ip netns exec "$srv" "$SW" run --config "$dir/synwall.toml" 2>"$dir/synwall.log" &
  swpid=$!
  for _ in $(seq 100); do "$SW" stats --socket "$dir/stats.sock" >/dev/null 2>&1 && break; sleep 0.2; done
  kill -0 "$swpid" || { echo "synwall did not start"; exit 1; }
  "$SW" status --socket "$dir/stats.sock" | sed -n 's/^\(interface\|queues\) */status: /p'
  "$SW" status --json --socket "$dir/stats.sock" >"$dir/status.json"
  local ok=0 i out channels
  channels=$(ip netns exec "$srv" ethtool -l eth0 | awk '/^Combined/ {n=$2} END {print n}')
  echo "queue pairs in use with XDP attached: $channels"
  for i in $(seq 20); do
    out=$(ip netns exec "$cli" curl -s --max-time 10 http://198.18.0.1/index.html || true)
    [ "$out" = "hello from behind synwall" ] && ok=$((ok + 1))
  done
  "$SW" stats --socket "$dir/stats.sock" >"$dir/stats.json"
  kill "$swpid"; wait "$swpid" || true; swpid=
  python3 - "$1 $2 $3" "$ok" "$dir/stats.json" "$dir/status.json" "$channels" "$dir/synwall.log" <<'PY'
import json, sys
phase, ok, s = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
synack, mode, engine = phase.split()
queues = [q["queue"] for q in json.load(open(sys.argv[4]))["queues"]]
channels, log = int(sys.argv[5]), open(sys.argv[6]).read()
x, a = s["xdp"], s["xdp_answers"]
workers = sum(w["synacks"] for w in s["workers"])
repaired = sum(w["repair"]["repaired"] for w in s["workers"])
kernel = x["syn_no_xsk"]
print(f"served {ok}/20 ({phase}), xdp_mode {s['xdp_mode']}, queues {queues}, synack_xdp {x['synack_xdp']}, "
      f"worker synacks {workers}, kernel's {kernel}, handoff_ok {x['handoff_ok']}, repaired {repaired}, "
      f"handoff_failed {x['handoff_failed']}, answers {a['state']} (failed {a['failed']}, driver {a['driver']})")
bad = []
if ok != 20: bad.append("not every request was served")
if s["xdp_mode"] != "native": bad.append("XDP is not native")
# The repair engine takes ACKs on every receive queue; with the kfunc, TC
# takes them, and the queues XDP adds need no socket.
want = list(range(channels if engine == "repair" else channels // 2))
if channels < 4 or sorted(queues) != want:
    bad.append(f"synwall serves queues {queues}, not {want} of the {channels} XDP brings")
# A SYN that meets an earlier connection's TIME-WAIT is the kernel's
# (pass_socket), served by it: the client's kernel hands out ports in
# sequence, so each phase reuses ports of the ones before, whose server
# sockets wait in TIME-WAIT (1 to 3 of 20 seen in full runs); up to 5.
if synack == "xdp" and x["synack_xdp"] < 15: bad.append("the SYN-ACKs did not come from XDP")
if synack == "auto" and (not a.get("leaving") or x["synack_xdp"] < 15):
    bad.append("XDP did not answer first, on a NIC whose answers are known to leave")
if synack == "afxdp" and (workers == 0 or workers + kernel < 15):
    bad.append("the SYN-ACKs did not come from the workers and, on the added queues, the kernel")
if synack == "afxdp" and kernel and "cannot send" not in log:
    bad.append("the kernel's share of the SYNs was not said")
if synack != "afxdp" and kernel: bad.append("SYNs went to the kernel")
if engine == "kfunc" and x["handoff_ok"] < min(18, workers + x["synack_xdp"]):
    bad.append("the hand-offs did not go through")
if engine == "repair" and repaired < min(18, workers + x["synack_xdp"]):
    bad.append("the repair engine did not rebuild the connections synwall answered")
if x["handoff_failed"]: bad.append("ACKs were lost (handoff_failed)")
if synack != "afxdp" and (a["state"] != "on" or a["failed"]): bad.append("the answer watch saw failures")
sys.exit("; ".join(bad) if bad else 0)
PY
}
phase xdp kernel kfunc
phase afxdp kernel kfunc
kill "$webpid"; wait "$webpid" 2>/dev/null || true
phase auto proxy repair
