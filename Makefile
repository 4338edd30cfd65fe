# A newcomer needs two targets: `make run` and `make test`. Both bootstrap .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The hot path compiled with mypyc by setup.py, as a wheel build does; without a C compiler
# beanq runs interpreted.
COMPILED := $(VENV)/.compiled
INTERPRETED_TESTS := tests/test_protocol.py tests/test_engine.py tests/test_collector.py \
	tests/test_server_streams.py tests/test_hardening.py tests/test_binlog.py \
	tests/test_extensions.py tests/test_binlog_ext.py tests/test_schedules.py \
	tests/test_binlog_schedules.py tests/test_schedules_server.py

SOAK_SECONDS ?= 300
FUZZ_SECONDS ?= 300

.PHONY: run test lint format bench soak fuzz clean

# The editable install itself is pure (BEANQ_PURE=1, with the venv's own setuptools): the
# compile is the next step's, so that it runs once, and again whenever a source changes.
# The .pth rewrite: setuptools maps client/beanq_client with an import hook whose own imports
# (pathlib, re) cost 30-60 ms of every start of the daemon; two plain path entries cost nothing.
define plain_pth
	for pth in $(VENV)/lib/python3*/site-packages/__editable__.beanq-*.pth; do \
		printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/client" > "$$pth"; done
endef

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	BEANQ_PURE=1 $(BIN)/python -m pip install -q --no-build-isolation -e '.[dev]'
	$(plain_pth)
	touch $(STAMP)

# The bench's extra dependencies, installed the same way (a plain `pip install -e` would bring
# the import hook back, and the start-up figures with it).
BENCH_STAMP := $(VENV)/.bench
$(BENCH_STAMP): $(STAMP)
	BEANQ_PURE=1 $(BIN)/python -m pip install -q --no-build-isolation -e '.[dev,bench]'
	$(plain_pth)
	touch $(BENCH_STAMP)

# The compile: setup.py's build_ext, in place, as a wheel build runs it. Forced, so that every
# module is newer than its source (the tests check) even where mypyc's C came out the same; a
# module compiled before a failed build is removed first, never left to shadow a newer source.
# compileall: bytecode for the modules that run before the daemon listens, also where the
# environment says not to write any (PYTHONDONTWRITEBYTECODE): compiling them at each start
# costs more than the interpreter's own start-up.
$(COMPILED): $(STAMP) $(wildcard beanq/*.py) setup.py
	rm -f beanq/*.so
	$(BIN)/python setup.py -q build_ext --inplace --force
	$(BIN)/python -m compileall -q beanq client/beanq_client
	touch $(COMPILED)

run: $(COMPILED)
	$(BIN)/beanq -l 127.0.0.1 -p 11300

lint: $(STAMP)
	$(BIN)/ruff check beanq client tests bench fuzz setup.py
	$(BIN)/ruff format --check beanq client tests bench fuzz setup.py
	$(BIN)/mypy --strict beanq client/beanq_client bench setup.py

format: $(STAMP)
	$(BIN)/ruff format beanq client tests bench fuzz setup.py
	$(BIN)/ruff check --fix beanq client tests bench fuzz setup.py

# Everything against the compiled build, then the in-process tests against the plain sources
# (what runs where there is no C compiler).
test: lint $(COMPILED)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	BEANQ_INTERPRETED=1 $(BIN)/python -m pytest -q $(INTERPRETED_TESTS)

bench: $(BENCH_STAMP) $(COMPILED)
	$(BIN)/python -m bench

# Minutes of mixed load, bad clients, slow readers and churn, then an audit of every job.
soak: $(COMPILED)
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

# Coverage-guided fuzzing of the codec and dispatcher (atheris is not a dev dependency).
fuzz: $(STAMP)
	$(BIN)/python -m pip install -q atheris
	mkdir -p fuzz/corpus fuzz/crashes
	$(BIN)/python fuzz/fuzz_codec.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=fuzz/crashes/ fuzz/corpus

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build beanq/*.so
