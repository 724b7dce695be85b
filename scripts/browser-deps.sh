#!/usr/bin/env bash
# `make browser-deps`: installs Debian's chromium and chromium-driver for the
# browser test (tests/browser.rs), when either program is missing. Tries without
# `apt-get update` first (fast, and works offline when the lists are fresh), then
# with it. Uses sudo only when not root.
set -euo pipefail

if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "browser-deps: chromium and chromedriver are missing and there is no apt-get: install them by hand" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
packages=(chromium chromium-driver)

echo "browser-deps: installing ${packages[*]}" >&2
if ! "${apt[@]}" install -y --no-install-recommends "${packages[@]}"; then
  "${apt[@]}" update
  "${apt[@]}" install -y --no-install-recommends "${packages[@]}"
fi
