#!/usr/bin/env bash
# Inside a guest of scripts/vm.sh on a kernel without the hand-off kfunc
# (Debian 12's 6.1): what synwall promises there beyond the netns tests.
#   - kernel mode is refused, with the pointer to proxy mode;
#   - proxy mode with the defaults (engine "auto", which picks "repair")
#     serves IPv4 and IPv6 clients, with SYN-ACKs from XDP and from the
#     workers;
#   - through the repair engine, 64 MiB arrive intact (IPv4 and IPv6) and
#     20 clients at once are served, no fewer than by the kernel alone
#     (one of margin);
#   - a SIGKILLed synwall leaves no program on the interface.
#   bash tests/vm/old_kernel.sh        (as root, in the guest)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
SW=${SYNWALL:-$root/target/debug/synwall}
p=swo$$
srv=$p-srv cli=$p-cli sif=${p}s cif=${p}c
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
fail() { echo "FAIL: $*"; exit 1; }
echo # the console's first line carries the firmware's escapes

ip netns add "$srv"; ip netns add "$cli"
ip link add "$sif" netns "$srv" type veth peer name "$cif" netns "$cli"
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" addr add 198.18.0.1/24 dev "$sif"; ip -n "$srv" addr add 2001:2::1/64 dev "$sif" nodad
ip -n "$cli" addr add 198.18.0.2/24 dev "$cif"; ip -n "$cli" addr add 2001:2::2/64 dev "$cif" nodad
ip -n "$srv" link set "$sif" up; ip -n "$cli" link set "$cif" up
mkdir -p "$dir/www"; echo "served on an old kernel" >"$dir/www/index.html"
ip netns exec "$srv" python3 -m http.server 8080 --bind :: --directory "$dir/www" >/dev/null 2>&1 &
webpid=$!
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/secret"; chmod 600 "$dir/secret"
get() { # URL: the page, within 10 s
  local page
  page=$(ip netns exec "$cli" curl -sg -m 10 "$1") || return 1
  [ "$page" = "served on an old kernel" ]
}
conf() { # MODE SYNACK
  printf '[datapath]\ninterface = "%s"\nsynack = "%s"\nstats_socket = "%s"\n[cookie]\nsecret_file = "%s"\n[handoff]\nmode = "%s"\nupstreams = ["198.18.0.1:8080"]\n' \
    "$sif" "$2" "$dir/stats.sock" "$dir/secret" "$1" >"$dir/synwall.toml"
}
start() {
  ip netns exec "$srv" "$SW" run --config "$dir/synwall.toml" >/dev/null 2>"$dir/synwall.log" &
  swpid=$!
  for _ in $(seq 100); do "$SW" stats --socket "$dir/stats.sock" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "synwall did not start: $(cat "$dir/synwall.log")"
}
for _ in $(seq 50); do get http://198.18.0.1:8080/ && break; sleep 0.2; done

# Kernel mode: refused, saying what to do instead.
conf kernel auto
if ip netns exec "$srv" "$SW" run --config "$dir/synwall.toml" 2>"$dir/refused.log"; then
  fail "kernel mode started on $(uname -r)"
fi
grep -q 'mode = "proxy"' "$dir/refused.log" || fail "kernel mode's refusal: $(cat "$dir/refused.log")"
echo "ok: kernel mode refused: $(grep -o 'kernel mode[^;]*' "$dir/refused.log" | head -1)"

# Proxy mode, SYN-ACKs from XDP (a sink would be needed on the client
# veth for XDP_TX to arrive: synwall moves XDP to generic mode itself),
# then from the workers; IPv4 and IPv6 each time.
for synack in xdp afxdp; do
  conf proxy "$synack"
  start
  ok=0
  for url in http://198.18.0.1/ "http://[2001:2::1]/"; do
    for _ in 1 2 3 4 5; do get "$url" && ok=$((ok + 1)); done
  done
  stats=$("$SW" stats --socket "$dir/stats.sock")
  python3 - "$synack" "$ok" "$stats" <<'PY'
import json, sys
synack, ok, s = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
x, w = s["xdp"], s["workers"]
workers = sum(q["synacks"] for q in w)
repaired = sum(q["repair"]["repaired"] for q in w)
print(f"served {ok}/10 (synack = {synack}, IPv4 and IPv6), synack_xdp {x['synack_xdp']}, worker synacks {workers}, repaired {repaired}, xdp_mode {s['xdp_mode']}")
bad = []
if ok != 10: bad.append("not every request was served")
if synack == "xdp" and x["synack_xdp"] < 1: bad.append("no SYN-ACK from XDP")
if synack == "afxdp" and workers < 10: bad.append("the workers did not answer")
if repaired < 10: bad.append("the repair engine did not build the connections")
sys.exit("; ".join(bad) if bad else 0)
PY
  if [ "$synack" = afxdp ]; then break; fi
  kill "$swpid"; wait "$swpid" || true; swpid=
done

# Through the repair engine's connections: 64 MiB intact, IPv4 and IPv6;
# then 20 clients at once, beside the same through the kernel alone (the
# upstream's own port): synwall serves no fewer.
head -c 64M /dev/urandom >"$dir/www/big"
want=$(sha256sum <"$dir/www/big")
for url in http://198.18.0.1/big "http://[2001:2::1]/big"; do
  t0=$(date +%s.%N)
  got=$(ip netns exec "$cli" curl -sg -m 120 "$url" | sha256sum)
  [ "$got" = "$want" ] || fail "64 MiB from $url arrived changed or cut short"
  echo "ok: 64 MiB intact from $url in $(echo "$(date +%s.%N) - $t0" | bc) s"
done
crowd() { # URL: how many of 20 clients at once got the page within 10 s
  seq 20 | xargs -P 20 -I{} ip netns exec "$cli" curl -sg -m 10 -o /dev/null -w '%{http_code}\n' "$1" | grep -c '^200$' || true
}
direct=$(crowd http://198.18.0.1:8080/) behind=$(crowd http://198.18.0.1/)
echo "ok: 20 clients at once: $behind served behind synwall, $direct by the kernel alone"
# One client of margin: the emulated guest's own noise.
[ "$behind" -ge $((direct - 1)) ] || fail "synwall served fewer concurrent clients than the kernel alone"

# SIGKILL: the link goes with the process; the upstream answers directly.
kill -KILL "$swpid"; wait "$swpid" 2>/dev/null || true; swpid=
for _ in $(seq 50); do ip -n "$srv" link show dev "$sif" | grep -q xdp || break; sleep 0.1; done
if ip -n "$srv" link show dev "$sif" | grep -q xdp; then fail "XDP left after SIGKILL"; fi
get http://198.18.0.1:8080/ || fail "the server does not answer after SIGKILL"
echo "ok: SIGKILL left no XDP program"
