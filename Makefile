.PHONY: demo test bench lint

# Install into .venv, then run an example flow on the embedded store and print where its record is.
demo:
	./scripts/demo

# Install into .venv and run ruff, mypy and the whole test suite (what CI runs).
test:
	./scripts/test

# Benchmarks against Prefect and papermill (not part of the tests).
bench:
	./scripts/bench

lint:
	.venv/bin/ruff check nbflow tests benchmarks examples && .venv/bin/ruff format --check nbflow tests benchmarks examples && .venv/bin/mypy
