#!/usr/bin/env bash
# Installs what building and running Lake needs and this machine lacks:
# redis-server (and redis-cli/redis-benchmark) and libclang-dev (bindgen, for
# the redis-module crate); with `test`, also what the suite needs: Python's
# venv (for moto_server) and docker-compose v1 (validates the compose file
# offline). Uses apt-get when run as root; otherwise says what to install and
# fails.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if ! ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
if [ "${1:-}" = test ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is missing: install Rust 1.94 or newer (https://rustup.rs)" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's package may start a system redis on 6379; Lake starts its own.
  if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
else
  echo "deps: missing ${missing[*]}; install them, e.g.: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
