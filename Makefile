# raftlb: every target SPEC.md lists. `make test` is what .ci/run runs.
# Each target's `##` line is its entry in `make help`, the default target, so
# a bare `make` says what there is instead of starting anything.
CARGO ?= cargo

.PHONY: help build browser-deps bench-deps chaos-deps test bench bench-parts hunt cluster status kill-random kill-leader kill-follower revive rolling-restart stop chaos hosts hosts-stop clean

help: ## this list: every target, one line each
	@awk -F ':.*## ' '/^[a-z][a-z-]*:.*## / { printf "  make %-15s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## the release binaries (target/release/raftlb, raftlb-node, -worker, -daemon)
	$(CARGO) build --release --locked

# The whole suite: unit tests, storage recovery, the classic Raft cases, the
# random-fault simulator (RAFTLB_SIM_SEEDS seeds, 1000 by default), the system
# tests, a 30 s chaos run (with network faults when root, hence chaos-deps) and
# the page in a headless Chromium (hence browser-deps).
test: browser-deps chaos-deps ## the whole test suite (what CI runs; about two minutes once built)
	$(CARGO) test --locked

# Chromium and chromedriver for tests/browser.rs, from Debian's packages when absent.
browser-deps: ## Chromium and chromedriver for the page's test, when missing
	@scripts/browser-deps.sh

# A long hunt for safety violations: HUNT_SEEDS seeds of the core's simulator,
# then as many of whole nodes' (tests/nodesim: the product's NodeLogic).
HUNT_SEEDS ?= 100000
hunt: ## both simulators (the core, whole nodes) on HUNT_SEEDS seeds (100000) each
	RAFTLB_SIM_SEEDS=$(HUNT_SEEDS) $(CARGO) test --locked --test sim_random -- --nocapture
	RAFTLB_SIM_SEEDS=$(HUNT_SEEDS) $(CARGO) test --locked --test sim_membership -- --nocapture
	RAFTLB_NODESIM_SEEDS=$(HUNT_SEEDS) $(CARGO) test --locked --test sim_node -- --nocapture

# raftlb beside etcd, HAProxy, nginx, primesieve and primecount: one run, one
# table, written to BENCHMARKS.md and printed (benches/compare/, ~25 minutes).
# BENCH_QUICK=1 for a short development run. /usr/sbin is added to PATH because
# haproxy and nginx live there and a user's PATH may not have it.
bench: build bench-deps ## raftlb beside etcd, HAProxy, nginx, primesieve; writes BENCHMARKS.md
	PATH="$$PATH:/usr/sbin:/sbin" $(CARGO) bench --locked --bench compare

# The reference tools for `make bench`, from Debian's packages when absent.
bench-deps: ## the benchmarks' reference tools from Debian's packages, when missing
	@scripts/bench-deps.sh

# The parts on their own, each printing its own table: commits per second of the
# Raft core in the simulator, appends per second of the storage with fsync, and
# the worker's N-th prime times (medians of several runs).
bench-parts: ## the Raft core, the storage and the worker benchmarked on their own
	$(CARGO) bench --locked --bench raft_core
	$(CARGO) bench --locked --bench storage
	$(CARGO) bench --locked --bench primes
	$(CARGO) bench --locked --bench balancing_sim

# The demo cluster: nodes A-E (nodes.txt), workers on 13337-13339, a daemon each.
# scripts/cluster.sh holds the logic; pids and logs go to run/, data to data/.
cluster: build ## start nodes A-E, 3 workers and their daemons; wait for a leader
	@scripts/cluster.sh start

revive: build ## restart every dead node, worker and daemon, from its data
	@scripts/cluster.sh revive

status: ## the nodes, the servers' load, and the leader or NO LEADER (exit 1)
	@scripts/cluster.sh $@

kill-random: ## kill -9 one random running node
	@scripts/cluster.sh $@

kill-leader: ## kill -9 the leader
	@scripts/cluster.sh $@

kill-follower: ## kill -9 one random running follower
	@scripts/cluster.sh $@

rolling-restart: build ## restart every node in turn, leader last, each caught up before the next
	@scripts/cluster.sh rolling-restart

stop: ## stop every process of the cluster (data stays in data/)
	@scripts/cluster.sh $@

# The cluster under a nemesis for CHAOS_SECS seconds (tests/chaos): node kills,
# pauses and restarts, worker kills and, as root, partitions and datagram loss
# in a network namespace of the test's own; one summary at the end, non-zero on
# any safety violation or lost write. CHAOS_SEED=S replays a run's choices.
# CHAOS_POWER=1 puts the data dirs on PowerFs (FUSE) and cuts a killed node's
# power: what it did not fsync is lost. CHAOS_HOSTS=1 (root) puts every node,
# worker and daemon on a host (network namespace) of its own, as tests/hosts
# does, and adds per-link faults: one-way, asymmetric, cut from the leader alone,
# flapping.
CHAOS_SECS ?= 120
CHAOS_POWER ?= 0
CHAOS_HOSTS ?= 0
chaos: chaos-deps ## the cluster under a nemesis for CHAOS_SECS s (120), then one verdict; CHAOS_POWER=1 cuts power too, CHAOS_HOSTS=1 runs it on hosts
	CHAOS_SECS=$(CHAOS_SECS) CHAOS_POWER=$(CHAOS_POWER) CHAOS_HOSTS=$(CHAOS_HOSTS) $(CARGO) test --locked --test chaos -- --nocapture

# The same cluster with every node, worker and daemon on a host of its own: a
# network namespace each, on a bridge, as root (scripts/hosts.sh). Its nodes
# file, key, pids and logs live in run/hosts/, its data in data/hosts/.
hosts: build ## the cluster, every node and server on a host of its own (network namespaces; root)
	@scripts/hosts.sh start

hosts-stop: ## stop the cluster of make hosts, delete its namespaces, veths and bridge
	@scripts/hosts.sh stop

# nftables and iproute2 for the chaos run's network faults, when root.
chaos-deps: ## nftables and iproute2 for the chaos run's network faults, when root
	@scripts/chaos-deps.sh

clean: ## stop the cluster, remove target/, run/ and data/
	-@scripts/cluster.sh stop
	-@scripts/hosts.sh stop
	$(CARGO) clean
	rm -rf run data
