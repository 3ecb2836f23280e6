# The two commands of the README. Both set up what they need first (idempotent; needs root on Debian/Ubuntu):
# `make demo` only the venv with dialerd and the local Asterisk, `make test` everything (dev tools,
# PostgreSQL, systemd tools, Chromium).
.PHONY: demo test lint setup setup-demo load bench bench-webhooks bench-cluster stall-test cluster-demo

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

# Three daemons on two local PBXs and PostgreSQL dial one campaign; one is killed midway and taken over
# (~1 min; examples/cluster_demo.py, docs/scale-out.md).
cluster-demo: setup
	.venv/bin/python examples/cluster_demo.py

# A daemon stalled (SIGSTOP) between committing an attempt and sending it, taken over meanwhile, then
# resumed (issue 13), with the PBX fence and without, 20 times in a row on two real PBXs and PostgreSQL
# (~20 min): no contact placed twice.
stall-test: setup
	@for i in $$(seq 1 20); do \
	  .venv/bin/pytest -q -s -p no:randomly tests/integration/test_cluster_pbxs.py -k stalled_between > /tmp/dialerd-stall.log 2>&1 \
	    || { tail -60 /tmp/dialerd-stall.log; echo "stall run $$i/20 FAILED"; exit 1; }; \
	  echo "stall run $$i/20 passed: $$(grep -E 'stalled with' /tmp/dialerd-stall.log)"; done

# The load test (tests/load); -s shows its figures (latency, loop lag, GC pauses, RSS), also written to
# bench/out/load.json. Latency is reported there, not asserted.
load: setup
	.venv/bin/python -m pytest -q -s -p no:cacheprovider -o addopts="" tests/load
