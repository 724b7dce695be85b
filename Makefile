# raftlb: every target SPEC.md lists. `make test` is what .ci/run runs.
CARGO ?= cargo

.PHONY: build browser-deps bench-deps chaos-deps test bench bench-parts hunt cluster status kill-random kill-leader kill-follower revive stop chaos clean

build:
	$(CARGO) build --release --locked

# The whole suite: unit tests, storage recovery, the classic Raft cases, the
# random-fault simulator (RAFTLB_SIM_SEEDS seeds, 1000 by default), the system
# tests, a 30 s chaos run (with network faults when root, hence chaos-deps) and
# the page in a headless Chromium (hence browser-deps).
test: browser-deps chaos-deps
	$(CARGO) test --locked

# Chromium and chromedriver for tests/browser.rs, from Debian's packages when absent.
browser-deps:
	@scripts/browser-deps.sh

# A long hunt for safety violations: HUNT_SEEDS seeds of the core's simulator,
# then as many of whole nodes' (tests/nodesim: the product's NodeLogic).
HUNT_SEEDS ?= 100000
hunt:
	RAFTLB_SIM_SEEDS=$(HUNT_SEEDS) $(CARGO) test --locked --test sim_random -- --nocapture
	RAFTLB_NODESIM_SEEDS=$(HUNT_SEEDS) $(CARGO) test --locked --test sim_node -- --nocapture

# raftlb beside etcd, HAProxy, nginx, primesieve and primecount: one run, one
# table, written to BENCHMARKS.md and printed (benches/compare/, ~6 minutes).
# BENCH_QUICK=1 for a short development run. /usr/sbin is added to PATH because
# haproxy and nginx live there and a user's PATH may not have it.
bench: build bench-deps
	PATH="$$PATH:/usr/sbin:/sbin" $(CARGO) bench --locked --bench compare

# The reference tools for `make bench`, from Debian's packages when absent.
bench-deps:
	@scripts/bench-deps.sh

# The parts on their own, each printing its own table: commits per second of the
# Raft core in the simulator, appends per second of the storage with fsync, and
# the worker's N-th prime times (medians of several runs).
bench-parts:
	$(CARGO) bench --locked --bench raft_core
	$(CARGO) bench --locked --bench storage
	$(CARGO) bench --locked --bench primes
	$(CARGO) bench --locked --bench balancing_sim

# The demo cluster: nodes A-E (nodes.txt), workers on 13337-13339, a daemon each.
# scripts/cluster.sh holds the logic; pids and logs go to run/, data to data/.
cluster: build
	@scripts/cluster.sh start

revive: build
	@scripts/cluster.sh revive

status kill-random kill-leader kill-follower stop:
	@scripts/cluster.sh $@

# The cluster under a nemesis for CHAOS_SECS seconds (tests/chaos): node kills,
# pauses and restarts, worker kills and, as root, partitions and datagram loss
# in a network namespace of the test's own; one summary at the end, non-zero on
# any safety violation or lost write. CHAOS_SEED=S replays a run's choices.
CHAOS_SECS ?= 120
chaos: chaos-deps
	CHAOS_SECS=$(CHAOS_SECS) $(CARGO) test --locked --test chaos -- --nocapture

# nftables and iproute2 for the chaos run's network faults, when root.
chaos-deps:
	@scripts/chaos-deps.sh

clean:
	-@scripts/cluster.sh stop
	$(CARGO) clean
	rm -rf run data
