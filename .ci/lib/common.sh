# Shared helpers for .ci/systemd-test and .ci/container-test (sourced, not run).
# shellcheck shell=bash

CACHE_DIR=${FINETUNE_WATCHER_CI_CACHE:-/var/cache/finetune-watcher-ci}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[%s %s] %s\n' "$(date -u +%H:%M:%S)" "${CI_NAME:-ci}" "$*"; }
die() { log "FAIL: $*"; exit 1; }

# apt-get install what is missing (commands given as cmd:package pairs).
need_tools() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# debootstrap_cached ROOT PKG... : a pristine minbase root with PKGs at ROOT, from a tarball
# cached under $CACHE_DIR keyed by the suite, architecture and package list.
debootstrap_cached() {
  local root=$1; shift
  local include key tarball
  include=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
  key=$(printf '%s|%s|%s|%s' "$SUITE" "$(dpkg --print-architecture)" "$MIRROR" "$include" \
        | sha256sum | cut -c1-16)
  tarball="$CACHE_DIR/root-$SUITE-$key.tar"
  mkdir -p "$CACHE_DIR" "$root"
  if [ -s "$tarball" ]; then
    log "root from cache $tarball"
  else
    log "debootstrap $SUITE (minbase + $include); cached as $tarball"
    local tmp; tmp=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
    if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$tmp" "$MIRROR" \
          >"$tmp.log" 2>&1; then
      tail -n 30 "$tmp.log"; rm -rf "$tmp" "$tmp.log"; die "debootstrap failed"
    fi
    chmod 0755 "$tmp"
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
    tar -C "$tmp" --numeric-owner -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$tmp" "$tmp.log"
  fi
  tar -C "$root" --numeric-owner -xf "$tarball"
  chmod 0755 "$root"   # mktemp made it 0700: no other user could reach /
}

# The wheels of the checkout and its dependencies, built by the host's pip (so its pip
# configuration, index mirror and CA bundle apply): a target then installs them with
# --no-index. Host and target are both Debian 12, same Python (3.11). Dependency wheels
# are kept in $CACHE_DIR/wheels: a rerun first tries offline from there, and asks the
# index only when that cannot satisfy the requirements.
build_wheelhouse() {
  local src=$1 out=$2 venv="$CACHE_DIR/pip-venv" cache="$CACHE_DIR/wheels"
  if [ ! -x "$venv/bin/pip" ]; then
    python3 -c 'import ensurepip' 2>/dev/null || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
    python3 -m venv "$venv"
  fi
  mkdir -p "$out" "$cache"
  # The build backend too (build-system.requires), for a target that builds the
  # project itself offline (the Dockerfile's "pip install .").
  local build_requires=()
  mapfile -t build_requires < <(python3 -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' \
    "$src/pyproject.toml")
  if ! "$venv/bin/pip" wheel -q --no-index --find-links "$cache" --wheel-dir "$out" \
       "$src" "${build_requires[@]}" >/dev/null 2>&1; then
    # (a configured local index may lack some projects: pip says so once per project)
    "$venv/bin/pip" wheel -q --wheel-dir "$out" "$src" "${build_requires[@]}" \
      2> >(grep -v "^WARNING: Location '" >&2)
  fi
  find "$out" -name '*.whl' ! -name 'finetune_watcher-*' -exec cp -n {} "$cache/" \;
}
