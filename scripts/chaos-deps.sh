#!/usr/bin/env bash
# `make chaos-deps`: installs Debian's nftables and iproute2 (`nft`, `ip`) for
# the network faults of tests/chaos, when either program is missing. The faults
# need root (the test makes a network namespace of its own), so as another user
# this only says that the run will go without them. A failed install is not an
# error either: the chaos run then prints why it left the network alone.
set -euo pipefail

if command -v nft >/dev/null && command -v ip >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chaos-deps: not root: make chaos will run without network faults" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "chaos-deps: nft or ip missing and no apt-get: make chaos will run without network faults" >&2
  exit 0
fi
apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
packages=(nftables iproute2)
echo "chaos-deps: installing ${packages[*]}" >&2
if ! "${apt[@]}" install -y --no-install-recommends "${packages[@]}"; then
  "${apt[@]}" update || true
  "${apt[@]}" install -y --no-install-recommends "${packages[@]}" ||
    echo "chaos-deps: could not install ${packages[*]}: make chaos will run without network faults" >&2
fi
