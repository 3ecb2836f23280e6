# The two commands of the README. Both set everything up first (idempotent; needs root on Debian/Ubuntu).
.PHONY: demo test lint setup

setup:
	bash .ci/setup

demo: setup
	.venv/bin/python examples/demo.py

test: setup
	.venv/bin/ruff check dialerd tests examples bench
	.venv/bin/mypy
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint:
	.venv/bin/ruff check dialerd tests examples bench
	.venv/bin/ruff format --check dialerd
	.venv/bin/mypy
