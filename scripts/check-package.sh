#!/usr/bin/env bash
# Checks the package scripts/package.sh built: what it contains (and that no
# bench tool is in it), its conffiles, and its unit with systemd's own tools
# (systemd-analyze verify, and security at most 4.0).
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls target/debian/synwall_*.deb | tail -n 1)
root=$(mktemp -d /tmp/synwall-deb.XXXXXX)
trap 'rm -rf "$root"' EXIT
fail() { echo "check-package: $*" >&2; exit 1; }

contents=$(dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|')
for want in /usr/bin/synwall /etc/synwall/synwall.toml \
  /usr/lib/systemd/system/synwall.service /usr/lib/sysusers.d/synwall.conf \
  /usr/share/man/man1/synwall.1.gz /usr/share/man/man1/synwall-run.1.gz \
  /usr/share/man/man1/synwall-reload.1.gz /usr/share/man/man1/synwall-status.1.gz \
  /usr/share/bash-completion/completions/synwall /usr/share/zsh/vendor-completions/_synwall \
  /usr/share/fish/vendor_completions.d/synwall.fish /usr/share/doc/synwall/README.md; do
  grep -qx "$want" <<<"$contents" || fail "$deb lacks $want"
done
if grep -E 'flood|testbed|xtask|bench' <<<"$contents"; then
  fail "$deb carries bench or build tools"
fi
[ "$(grep -c '^/usr/bin/.' <<<"$contents")" -eq 1 ] || fail "more than one binary: $(grep '^/usr/bin/.' <<<"$contents")"
dpkg-deb -f "$deb" Depends | grep -q libelf1 || fail "no shared-library dependencies"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/synwall/synwall.toml ||
  fail "/etc/synwall/synwall.toml is not a conffile"

# The unit, as systemd sees it, in a root with the host's own units beside it.
mkdir -p "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
dpkg-deb -x "$deb" "$root"
systemd-analyze verify --man=no --root="$root" synwall.service
# The threshold is on systemd's 0-100 scale: 40 is "4.0".
score=$(systemd-analyze security --offline=yes --root="$root" --threshold=40 synwall.service 2>&1 |
  sed -n 's/.*Overall exposure level for synwall.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "systemd-analyze security gave no score"
echo "check-package: $deb ok; systemd-analyze security: $score (at most 4.0)"
