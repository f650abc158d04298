# The two commands of the README: `make devnet` and `make test`. Everything installs itself
# into .venv from the package registries; nothing is expected on the machine beyond python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: test lint typecheck unit bench scale chaos fuzz devnet clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check ledger tests bench

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest -q -n 2

test: lint typecheck unit

bench: $(VENV)/.installed-bench
	$(PY) bench/merkle.py
	$(PY) bench/consensus.py
	$(PY) bench/cluster.py --duration 60

# The store filled to 10^5, 10^6 and 10^7 anchors (real files, about 5 minutes): append rate
# against the empty-log rate, RssAnon, disk per anchor, per-block overhead, proof and lookup
# latency, start-up time, with the machine's ceilings (docs/performance.md, "Storage").
scale: $(STAMP)
	$(PY) bench/store_scale.py

# The long fault searches: the consensus simulator over 2000 random schedules (every fault and
# Byzantine behaviour; JSON summary), then 10 minutes of nemesis on 4 real node processes
# (kills, pauses, partitions, delays, duplicates, clock skew; counts printed). Each exits
# non-zero on any violation or lost anchor.
chaos: $(STAMP)
	$(PY) -m ledger.cli simulate --nodes 4 --byzantine 1 --schedules 2000 --seed 1 --heights 3
	$(PY) tests/chaos/run.py --duration 600 --seed 1

# The long hostile-input run: 100,000 random, mutated, oversized, replayed and wrong-chain peer
# messages against a running node; fails on a crash, a 5xx or a state change.
fuzz: $(STAMP)
	$(PY) tests/hostile/fuzz_peer.py --messages 100000

# A 4-validator cluster on 127.0.0.1 in the foreground (Ctrl-C stops it); state in ./devnet.
devnet: $(STAMP)
	$(PY) -m ledger.cli devnet up --dir devnet

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
