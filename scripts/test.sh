#!/usr/bin/env bash
# Runs every sandpool test on a fresh Debian machine as root: installs what the tests need,
# starts a throwaway PostgreSQL, then runs the whole cargo test suite against it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_root
install_packages
ensure_rust
ensure_python_sdk
ensure_azure_cli
start_test_postgres   # exports SANDPOOL_TEST_DATABASE_URL, stops the cluster on exit

cargo test --workspace --no-fail-fast -- --test-threads="${SANDPOOL_TEST_THREADS:-4}"
