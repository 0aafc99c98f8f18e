#!/usr/bin/env bash
# Inside a guest of scripts/vm.sh with VM_NICS=2 (two virtio-net NICs that
# qemu joins to each other, and nothing else): synwall on a real NIC
# driver. eth0 goes to a server namespace, eth1 to a client namespace;
# synwall takes eth0 in native XDP with its defaults but `synack`, run
# twice: "xdp", so a handshake completes only if virtio_net sends XDP_TX
# answers, then "afxdp", so only if the workers' AF_XDP answers leave; a
# python web server listens behind it (kernel mode, the kfunc hand-off).
# Checks each time: XDP attached native, 20 requests served, the SYN-ACKs
# came from where they should, the hand-offs went through, and the answer
# watch saw no failure. `synwall status` says copy or zero-copy per queue.
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
  if [ -n "${webpid:-}" ]; then kill "$webpid" 2>/dev/null || true; fi
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$srv"; ip netns add "$cli"
ip link set eth0 netns "$srv"; ip link set eth1 netns "$cli"
ip -n "$srv" addr add 198.18.0.1/24 dev eth0; ip -n "$srv" link set eth0 up; ip -n "$srv" link set lo up
ip -n "$cli" addr add 198.18.0.2/24 dev eth1; ip -n "$cli" link set eth1 up; ip -n "$cli" link set lo up
echo "driver: $(ip netns exec "$srv" ethtool -i eth0 | sed -n 's/^driver: //p')"

mkdir -p "$dir/www"; echo "hello from behind synwall" >"$dir/www/index.html"
ip netns exec "$srv" python3 -m http.server 80 --bind 198.18.0.1 --directory "$dir/www" >/dev/null 2>&1 &
webpid=$!
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret"; chmod 600 "$dir/secret"

# One run of synwall with `synack = $1`: 20 requests, its status, checks.
phase() {
  cat >"$dir/synwall.toml" <<CFG
[datapath]
interface = "eth0"
synack = "$1"
stats_socket = "$dir/stats.sock"
[cookie]
secret_file = "$dir/secret"
CFG
  ip netns exec "$srv" "$SW" run --config "$dir/synwall.toml" 2>"$dir/synwall.log" &
  swpid=$!
  for _ in $(seq 100); do "$SW" stats --socket "$dir/stats.sock" >/dev/null 2>&1 && break; sleep 0.2; done
  kill -0 "$swpid" || { echo "synwall did not start"; exit 1; }
  "$SW" status --socket "$dir/stats.sock" | sed -n 's/^\(interface\|queues\) */status: /p'
  local ok=0 i out
  for i in $(seq 20); do
    out=$(ip netns exec "$cli" curl -s --max-time 10 http://198.18.0.1/index.html || true)
    [ "$out" = "hello from behind synwall" ] && ok=$((ok + 1))
  done
  "$SW" stats --socket "$dir/stats.sock" >"$dir/stats.json"
  kill "$swpid"; wait "$swpid" || true; swpid=
  python3 - "$1" "$ok" "$dir/stats.json" <<'PY'
import json, sys
synack, ok, s = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
x, a = s["xdp"], s["xdp_answers"]
workers = sum(w["synacks"] for w in s["workers"])
print(f"served {ok}/20 (synack = {synack}), xdp_mode {s['xdp_mode']}, synack_xdp {x['synack_xdp']}, "
      f"worker synacks {workers}, handoff_ok {x['handoff_ok']}, answers {a['state']} "
      f"(watched {a['watched']}, failed {a['failed']}, driver {a['driver']})")
bad = []
if ok != 20: bad.append("not every request was served")
if s["xdp_mode"] != "native": bad.append("XDP is not native")
if synack == "xdp" and x["synack_xdp"] < 20: bad.append("the SYN-ACKs did not come from XDP")
if synack == "afxdp" and workers < 20: bad.append("the SYN-ACKs did not come from the workers")
if x["handoff_ok"] < 20: bad.append("the hand-offs did not go through")
if synack == "xdp" and (a["state"] != "on" or a["failed"]): bad.append("the answer watch saw failures")
sys.exit("; ".join(bad) if bad else 0)
PY
}
phase xdp
phase afxdp
