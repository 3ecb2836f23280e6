# The two commands of the README. Both set up what they need first (idempotent; needs root on Debian/Ubuntu):
# `make demo` only the venv with dialerd and the local Asterisk, `make test` everything (dev tools,
# PostgreSQL, systemd tools, Chromium).
.PHONY: demo test lint setup setup-demo load bench bench-webhooks bench-cluster

setup:
	bash .ci/setup

setup-demo:
	bash .ci/setup demo

demo: setup-demo
	.venv/bin/python examples/demo.py

test: setup
	.venv/bin/ruff check dialerd tests examples bench
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint:
	.venv/bin/ruff check dialerd tests examples bench
	.venv/bin/ruff format --check dialerd
	.venv/bin/mypy

# Performance as ratios against baselines measured in the same run (~6 min, loopback only): prints a
# table and writes docs/benchmarks.md. See bench/.
bench: setup
	.venv/bin/python -m bench

# Webhooks under load (~1 min): the dispatcher's rate with no webhook, a fast and a 2 s receiver, and the
# events/s one campaign's webhook drains (bench/webhook_load.py).
bench-webhooks: setup
	.venv/bin/python -m bench.webhook_load

# Several daemons on one PostgreSQL (~2.5 min, loopback, 127.0.0.1:5432; makes and drops clbench_* databases):
# claims/s for 1, 2 and 4 daemon processes on one tenant and on their own tenants, PostgreSQL CPU per
# claim, the claim on a table with older campaigns, and a daemon's CPU per call on PostgreSQL against
# SQLite (bench/cluster.py).
bench-cluster: setup
	.venv/bin/python -m bench.cluster

# The load test (tests/load); -s shows its figures (latency, loop lag, GC pauses, RSS), also written to
# bench/out/load.json. Latency is reported there, not asserted.
load: setup
	.venv/bin/python -m pytest -q -s -p no:cacheprovider -o addopts="" tests/load
