# A newcomer needs two targets: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SOAK_SECONDS ?= 300
FUZZ_SECONDS ?= 300

.PHONY: run test lint format bench soak fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/beanq -l 127.0.0.1 -p 11300

lint: $(STAMP)
	$(BIN)/ruff check beanq client tests bench fuzz
	$(BIN)/ruff format --check beanq client tests bench fuzz
	$(BIN)/mypy --strict beanq client/beanq_client bench

format: $(STAMP)
	$(BIN)/ruff format beanq client tests bench fuzz
	$(BIN)/ruff check --fix beanq client tests bench fuzz

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench

# Minutes of mixed load, bad clients, slow readers and churn, then an audit of every job.
soak: $(STAMP)
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

# Coverage-guided fuzzing of the codec and dispatcher (atheris is not a dev dependency).
fuzz: $(STAMP)
	$(BIN)/python -m pip install -q atheris
	mkdir -p fuzz/corpus fuzz/crashes
	$(BIN)/python fuzz/fuzz_codec.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/crashes/ fuzz/corpus

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
