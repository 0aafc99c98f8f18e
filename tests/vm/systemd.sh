#!/usr/bin/env bash
# The Debian package under systemd as PID 1 (run in a guest booted by
#   VM_INIT=systemd bash scripts/vm.sh PACKAGE bash tests/vm/systemd.sh
# after scripts/package.sh): what the unit promises an operator.
#   - the package installs; its postinst makes a 0600 secret of the
#     service user's;
#   - with a NetworkNamespacePath= drop-in (the server lives in a
#     namespace, the way every test here keeps off the root namespace's
#     interfaces), `systemctl start` reaches READY and the server is served
#     through synwall;
#   - `systemctl reload` applies a good file live (a deny entry for the
#     client takes effect and is lifted) and fails on a broken one, while
#     synwall keeps running and serving;
#   - the journal holds synwall's warnings at warning priority, and its
#     info lines below it;
#   - the watchdog restarts a synwall that stops answering (SIGSTOP);
#   - `systemctl stop` leaves no XDP or TC program on the interface;
#   - `systemd-analyze security` of the installed unit is at most 4.0.
set -euo pipefail
p=swsd$$
srv=$p-srv cli=$p-cli
sif=${p}s cif=${p}c
SRV4=198.18.3.1 CLI4=198.18.3.2
www=$(mktemp -d)
cleanup() {
  systemctl stop synwall 2>/dev/null || true
  if [ -n "${web:-}" ]; then kill "$web" 2>/dev/null || true; fi
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$www" /etc/systemd/system/synwall.service.d
}
trap cleanup EXIT
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND"' ERR
fail() {
  echo "FAIL: $*"
  ip netns exec "$cli" curl -sv -m 5 "http://$SRV4/" 2>&1 | tail -5 || true
  synwall stats --socket /run/synwall/stats.sock 2>&1 | tr -d ' \n' | head -c 3000 || true
  echo
  journalctl -u synwall --no-pager -n 40 -o short-monotonic || true
  exit 1
}
ok() { echo "ok: $*"; }
t0=$SECONDS
elapsed() { echo "$((SECONDS - t0)) s"; }

deb=$(ls target/debian/synwall_*.deb | tail -n 1)
# man-db's trigger re-indexes every manual page: minutes in an emulated
# guest, and nothing this test looks at.
rm -f /var/lib/man-db/auto-update
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
echo "dpkg -i: $(elapsed)"
[ "$(stat -c '%a %U' /etc/synwall/secret)" = "600 synwall" ] ||
  fail "postinst's secret: $(stat -c '%a %U' /etc/synwall/secret)"
ok "package installed, secret 0600 synwall ($(elapsed))"

# Server and client namespaces, one veth between them; nothing on the
# client's end (the set-up an operator has: no XDP program there).
ip netns add "$srv"
ip netns add "$cli"
ip link add "$sif" netns "$srv" type veth peer name "$cif" netns "$cli"
ip -n "$srv" addr add $SRV4/24 dev "$sif"
ip -n "$cli" addr add $CLI4/24 dev "$cif"
ip -n "$srv" link set "$sif" up
ip -n "$cli" link set "$cif" up
ip -n "$srv" link set lo up
ip -n "$cli" link set lo up
echo "served by the namespaced server" >"$www/index.html"
ip netns exec "$srv" python3 -m http.server 80 --bind $SRV4 --directory "$www" >/dev/null 2>&1 &
web=$!
get() { # the page from the client namespace, within $1 s (10)
  local page
  page=$(ip netns exec "$cli" curl -s -m "${1:-10}" "http://$SRV4/") || return 1
  grep -q "namespaced server" <<<"$page"
}
for _ in $(seq 50); do get 2 && break; sleep 0.2; done
get || fail "the server does not answer without synwall"

conf=/etc/synwall/synwall.toml
# Port 81 is protected and nothing listens there: synwall warns of it.
sed -i "s/^interface = .*/interface = \"$sif\"/; s|^# secret_file = .*|secret_file = \"/etc/synwall/secret\"|; s/^ports = \[80\]/ports = [80, 81]/" $conf
grep -q "^interface = \"$sif\"" $conf && grep -q '^secret_file' $conf && grep -q '^ports = \[80, 81\]' $conf ||
  fail "config not edited"
mkdir -p /etc/systemd/system/synwall.service.d
printf '[Service]\nNetworkNamespacePath=/run/netns/%s\n' "$srv" >/etc/systemd/system/synwall.service.d/netns.conf
systemctl daemon-reload
systemctl start synwall || fail "systemctl start"
[ "$(systemctl is-active synwall)" = active ] || fail "not active after start"
ip -n "$srv" link show dev "$sif" | grep -q 'prog/xdp' || fail "no XDP program on $sif"
get || fail "not served through synwall"
pid=$(systemctl show -p MainPID --value synwall)
ok "start reached READY, XDP on $sif, served ($(elapsed))"

# A good reload applies live: deny the client, then lift it.
cp $conf $conf.good
sed -i "s|^deny = \[\]|deny = [\"$CLI4/32\"]|" $conf
systemctl reload synwall || fail "reload of a good file"
get 3 && fail "the reloaded deny entry did not take effect"
cp $conf.good $conf
systemctl reload synwall || fail "reload back"
get || fail "not served after the deny entry was lifted"
# A broken file: the reload fails, synwall keeps running the old one.
echo "[protect" >>$conf
systemctl reload synwall && fail "a broken file's reload succeeded"
[ "$(systemctl is-active synwall)" = active ] || fail "not active after a rejected reload"
[ "$(systemctl show -p MainPID --value synwall)" = "$pid" ] || fail "restarted by a rejected reload"
get || fail "not served after a rejected reload"
cp $conf.good $conf
ok "reload: good file applied live, broken file refused, synwall kept serving ($(elapsed))"

# The journal: synwall's warnings at warning priority (port 81 gives one:
# nothing listens there), its info lines below.
journal() { # synwall's own lines, as JSON (read whole, then filtered)
  local all
  all=$(journalctl -u synwall -o json --no-pager "$@")
  grep '"SYSLOG_IDENTIFIER":"synwall"' <<<"$all" || true
}
warn=$(journal -p warning | grep 'nothing listens on this protected port' | head -1 || true)
[ -n "$warn" ] || fail "no warning in journalctl -p warning"
python3 -c 'import json,sys; e=json.loads(sys.argv[1]); assert e["PRIORITY"]=="4", e["PRIORITY"]' "$warn" ||
  fail "the warning's priority: $warn"
info=$(journal -p info..info | grep -c . || true)
[ "$info" -gt 0 ] || fail "no info lines from synwall"
journal -p warning | python3 -c 'import json,sys; bad=[e["MESSAGE"] for e in map(json.loads,sys.stdin) if int(e["PRIORITY"])>4]; assert not bad, bad' ||
  fail "info lines in journalctl -p warning"
ok "journal: warning at priority 4, $info info lines below it ($(elapsed))"

# The watchdog: a synwall that stops answering is killed and restarted.
kill -STOP "$pid"
for _ in $(seq 120); do
  now=$(systemctl show -p MainPID --value synwall)
  [ "$now" != "$pid" ] && [ "$now" != 0 ] && [ "$(systemctl is-active synwall)" = active ] && break
  sleep 0.5
done
[ "$now" != "$pid" ] && [ "$now" != 0 ] || fail "the watchdog did not restart a stopped synwall"
[ "$(systemctl show -p NRestarts --value synwall)" -ge 1 ] || fail "NRestarts"
unit_log=$(journalctl -u synwall --no-pager)
grep -q "Watchdog timeout" <<<"$unit_log" || fail "systemd logged no watchdog timeout"
get || fail "not served after the watchdog's restart"
ok "watchdog restarted a stopped synwall (pid $pid -> $now) ($(elapsed))"

score=$(systemd-analyze security synwall.service 2>&1 |
  sed -n 's/.*Overall exposure level for synwall.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security gave no score"
python3 -c "import sys; sys.exit(0 if float('$score') <= 4.0 else 1)" || fail "exposure $score > 4.0"
ok "systemd-analyze security: $score ($(elapsed))"

systemctl stop synwall
left=$(ip -n "$srv" link show dev "$sif" | grep xdp || true)
left+=$(ip netns exec "$srv" bpftool net show dev "$sif" | grep -E 'id [0-9]+' || true)
[ -z "$left" ] || fail "programs left after stop: $left"
get || fail "the kernel does not serve after stop"
ok "stop left no program, the kernel serves ($(elapsed))"
echo "systemd: all passed in $(elapsed)"
