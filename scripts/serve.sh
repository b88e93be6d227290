#!/usr/bin/env bash
# Builds sandpool and starts `sandpool serve` with its embedded defaults: SQLite in the data
# directory, resource group `default` and Shell pool `default`, listening on 127.0.0.1:8080.
# Extra arguments go to `sandpool serve` (e.g. --listen 0.0.0.0:8443 --tls-self-signed).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_root
install_packages
ensure_rust
cargo build --release -p sandpool-cli
exec ./target/release/sandpool serve "$@"
