#!/usr/bin/env bash
# `make bench` (first step): installs the reference tools the comparison runs
# beside raftlb, from Debian's packages, when their programs are missing:
# etcd-server (etcd), etcd-client (etcdctl), haproxy, nginx, wrk, primesieve,
# primecount. Tries without `apt-get update` first (fast, and works offline
# when the lists are fresh), then with it. Uses sudo only when not root.
#
# The haproxy and nginx packages may start system services: the bench never
# uses or touches them; it runs its own instances on free loopback ports.
set -euo pipefail

# program:package
wanted=(
  etcd:etcd-server
  etcdctl:etcd-client
  haproxy:haproxy
  nginx:nginx
  wrk:wrk
  primesieve:primesieve
  primecount:primecount
)

packages=()
for pair in "${wanted[@]}"; do
  program=${pair%%:*}
  package=${pair#*:}
  # haproxy and nginx live in /usr/sbin, which a user's PATH may lack.
  if ! command -v "$program" >/dev/null && [ ! -x "/usr/sbin/$program" ]; then
    packages+=("$package")
  fi
done
if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "bench-deps: missing ${packages[*]} and there is no apt-get: install them by hand" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)

echo "bench-deps: installing ${packages[*]}" >&2
if ! "${apt[@]}" install -y --no-install-recommends "${packages[@]}"; then
  "${apt[@]}" update
  "${apt[@]}" install -y --no-install-recommends "${packages[@]}"
fi
