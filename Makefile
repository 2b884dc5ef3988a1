# Task file. On a fresh machine `make demo` and `make test` are all a user types:
# both run the (idempotent) set-up first.
PY := .venv/bin/python
STAMPS := .venv/.lorsp-setup .venv-lava/.lorsp-setup
DEMO_OUT ?= demo_out

.PHONY: setup test test-fast demo bench bench-full lint format clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

demo: setup
	.venv/bin/lorsp demo --out $(DEMO_OUT)

bench: setup
	$(PY) -m benchmarks.run_all

bench-full: setup
	$(PY) -m benchmarks.run_all --extended

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

clean:
	rm -rf .venv .venv-lava .pytest_cache .ruff_cache .hypothesis $(DEMO_OUT)
