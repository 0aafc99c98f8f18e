#!/usr/bin/env bash
# Builds the Debian package: target/debian/synwall_<version>-1_<arch>.deb
# (binary, unit, system user, /etc/synwall/synwall.toml, man pages and shell
# completions generated from the clap definitions). Needs cargo-deb (installed
# here when missing) and dpkg-dev (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

cargo build --locked --release -p synwall --bin synwall
rm -rf target/assets
cargo run --locked --quiet -p synwall-xtask -- assets target/assets
gzip -9n target/assets/man/*.1
cargo deb --locked -p synwall --no-build --quiet
ls target/debian/synwall_*.deb
