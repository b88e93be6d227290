# Shared steps of sandpool's scripts (sourced, not run).

ensure_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "sandpool: run this as root (sandboxes need namespaces, cgroups and mounts)" >&2
    exit 1
  fi
}

# Debian packages the service and its tests use. Installed only when something is missing, so a
# machine that has them does not need the package index.
APT_PACKAGES=(ca-certificates gcc pkg-config iproute2 nftables postgresql python3 python3-pip python3-venv bubblewrap crun git nodejs perl)
install_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "sandpool: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "sandpool: installing Debian's cargo" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq cargo >/dev/null
  fi
}

# A PostgreSQL cluster of its own in a temp dir, on a free port, owned by the postgres user.
start_test_postgres() {
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PG_DIR=$(mktemp -d /tmp/sandpool-pg.XXXXXX)
  chown postgres:postgres "$PG_DIR"
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  su postgres -s /bin/sh -c "$bindir/initdb -D '$PG_DIR/data' -A trust -U postgres >/dev/null"
  su postgres -s /bin/sh -c "$bindir/pg_ctl -D '$PG_DIR/data' -l '$PG_DIR/log' -w \
      -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off\" start >/dev/null"
  export SANDPOOL_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  trap 'su postgres -s /bin/sh -c "'"$bindir"'/pg_ctl -D '"'$PG_DIR/data'"' -m immediate stop" >/dev/null 2>&1; rm -rf "'"$PG_DIR"'"' EXIT
}

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
# A virtualenv with the Azure SDK packages the compatibility tests drive (Debian's own python
# refuses global pip installs). Exports PYTHON for the tests.
ensure_python_sdk() {
  local venv="${SANDPOOL_TEST_VENV:-$PWD/target/py-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c 'import azure.mgmt.appcontainers, azure.identity' 2>/dev/null; then
    echo "sandpool: installing the Azure SDK packages into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check azure-mgmt-appcontainers azure-identity
  fi
  # tests/openapi.rs: the validator and the fuzzer of /openapi.json, pinned.
  if [ "$("$venv/bin/python" -m pip show schemathesis 2>/dev/null | sed -n 's/^Version: //p')" != "$SCHEMATHESIS_VERSION" ] ||
     [ "$("$venv/bin/python" -m pip show openapi-spec-validator 2>/dev/null | sed -n 's/^Version: //p')" != "$OPENAPI_SPEC_VALIDATOR_VERSION" ]; then
    echo "sandpool: installing schemathesis and openapi-spec-validator into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
  fi
  export PYTHON="$venv/bin/python"
}

# The real Azure CLI for tests/azure_cli.rs, in a venv of its own (it pins its own azure-mgmt-*
# versions, which must not move the SDK tests' ones). Exports AZ.
AZURE_CLI_VERSION=2.91.0
ensure_azure_cli() {
  local venv="${SANDPOOL_AZ_VENV:-$PWD/target/az-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if [ "$("$venv/bin/az" version --query '"azure-cli"' -o tsv 2>/dev/null)" != "$AZURE_CLI_VERSION" ]; then
    echo "sandpool: installing azure-cli $AZURE_CLI_VERSION into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "azure-cli==$AZURE_CLI_VERSION"
  fi
  export AZ="$venv/bin/az"
}
