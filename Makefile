# The two commands of the README: `make devnet` and `make test`. Everything installs itself
# into .venv from the package registries; nothing is expected on the machine beyond python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

# `make devnet` runs DEVNET_DIR on 127.0.0.1 from DEVNET_PORT (ports DEVNET_PORT .. +3).
DEVNET_DIR ?= devnet
DEVNET_PORT ?= 7100

.PHONY: install test lint typecheck unit bench scale chaos fuzz devnet clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

# The package (and the test tools) in .venv, without running anything: `. .venv/bin/activate`
# then puts `ledger` on PATH. `make devnet` and `make test` do this first by themselves.
install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check ledger tests bench

typecheck: $(STAMP)
	$(PY) -m mypy

# loadgroup: the tests that share one devnet (marked xdist_group) run in the same worker.
unit: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

test: lint typecheck unit

bench: $(VENV)/.installed-bench
	$(PY) bench/merkle.py
	$(PY) bench/consensus.py
	$(PY) bench/checkpoints.py
	$(PY) bench/cluster.py --duration 60
	$(PY) bench/eod.py

# The store filled to 10^5, 10^6 and 10^7 anchors (real files, about 5 minutes): append rate
# against the empty-log rate, RssAnon, disk per anchor, per-block overhead, proof and lookup
# latency, start-up time, with the machine's ceilings (docs/performance.md, "Storage").
scale: $(STAMP)
	$(PY) bench/store_scale.py

# The long fault searches: the simulator (the production replica) over 2000 random schedules
# from the fixed seed 1, then 500 more from a fresh seed drawn now and printed, so that the
# search keeps finding what fixed seeds cannot (a failure prints its first failing seed:
# `ledger simulate --seed S --schedules 1` replays it); then 10 minutes of nemesis on 4 real
# node processes (kills, pauses, partitions, delays, duplicates, clock skew; counts printed).
# Each exits non-zero on any violation or lost anchor.
CHAOS_JOBS ?= 2
chaos: $(STAMP)
	$(PY) -m ledger.cli simulate --nodes 4 --byzantine 1 --schedules 2000 --seed 1 --heights 3 \
		--jobs $(CHAOS_JOBS)
	@seed=$$($(PY) -c 'import secrets; print(secrets.randbelow(10**9))'); \
	echo "fresh simulator seed: $$seed"; \
	$(PY) -m ledger.cli simulate --nodes 4 --byzantine 1 --schedules 500 --seed $$seed \
		--heights 3 --jobs $(CHAOS_JOBS)
	$(PY) tests/chaos/run.py --duration 600 --seed 1

# The long hostile-input runs: 100,000 random, mutated, oversized, replayed and wrong-chain peer
# messages against a running node (fails on a crash, a 5xx or a state change); then 20,000 idle
# and 1,000 slowloris connections to one devnet node (fails unless an anchor and a proof to it
# succeed within 1 s, the cluster keeps committing and its log grows by less than 1 MB).
fuzz: $(STAMP)
	$(PY) tests/hostile/fuzz_peer.py --messages 100000
	$(PY) tests/hostile/flood.py --idle 20000 --slowloris 1000

# A 4-validator cluster on 127.0.0.1 in the foreground (Ctrl-C stops every node); state in
# ./devnet. A second one, or any program on its ports, is refused with one line.
devnet: $(STAMP)
	@$(PY) -m ledger.cli devnet up --dir $(DEVNET_DIR) --base-port $(DEVNET_PORT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
