# A newcomer needs two targets: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench soak fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/beanq -l 127.0.0.1 -p 11300

lint: $(STAMP)
	$(BIN)/ruff check beanq client tests bench
	$(BIN)/ruff format --check beanq client tests bench
	$(BIN)/mypy --strict beanq client/beanq_client bench

format: $(STAMP)
	$(BIN)/ruff format beanq client tests bench
	$(BIN)/ruff check --fix beanq client tests bench

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
