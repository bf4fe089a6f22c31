# The two commands: `make run` (serve on 127.0.0.1:8000) and `make test`.
# The Python environment is cached outside the clone (scripts/ensure-env.sh), keyed by
# requirements.lock, so only the first run on a machine pays for the install.
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

VENV = $(shell scripts/ensure-env.sh)
PYTEST_ARGS ?=

.PHONY: run test test-unit lint format env models lock bench locust clean

env:
	@scripts/ensure-env.sh

models: env
	@venv=$$(scripts/ensure-env.sh) && $$venv/bin/python -m cli prepare-models

run: env
	@venv=$$(scripts/ensure-env.sh) && exec $$venv/bin/python -m cli serve

# Every tier, in two streams at once (scripts/test-tiers.sh says which and why).
test: env
	@venv=$$(scripts/ensure-env.sh) && scripts/test-tiers.sh $$venv/bin/python $(PYTEST_ARGS)

# The pure tier (tests/unit): no database, model, network or subprocess. Its database settings
# point at a closed port, so a test that reaches for PostgreSQL fails instead of passing here.
NO_DATABASE = postgresql://nobody@127.0.0.1:1/none
test-unit: env
	@venv=$$(scripts/ensure-env.sh) && STT_DATABASE_URL=$(NO_DATABASE) STT_TEST_PG_ADMIN=$(NO_DATABASE) \
	    $$venv/bin/python -m pytest tests/unit $(PYTEST_ARGS)

# Formatter and linter (ruff, configured in pyproject.toml); CI runs `make lint`.
lint: env
	@venv=$$(scripts/ensure-env.sh) && $$venv/bin/ruff check . && $$venv/bin/ruff format --check .

format: env
	@venv=$$(scripts/ensure-env.sh) && $$venv/bin/ruff check --fix . && $$venv/bin/ruff format .

# Re-pin every dependency after editing pyproject.toml.
lock:
	uv pip compile pyproject.toml --extra test --python-version 3.11 \
	    --index-url https://pypi.org/simple -o requirements.lock

clean:
	rm -rf .pytest_cache
