# Two commands do all set-up on a fresh machine:
#   make run    start the whole backend on embedded defaults (chdb, local spool) on :8000
#   make test   install everything the tests need and run them
VENV ?= .venv
PY := $(VENV)/bin/python
HASH := $(shell cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)

# `make run` installs the runtime dependencies only; `make test` adds the test extras.
$(RUN_STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	rm -f $(VENV)/.installed-run-* && touch $@

$(TEST_STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# one resolution for runtime and test pins (moto must not upgrade aiobotocore's botocore)
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@ $(RUN_STAMP)

.PHONY: install run test lint test-servers bench
install: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/oonibackend run $(ARGS)

# Real servers the tests start: Debian's clickhouse-server (18.16) for native-protocol checks,
# nginx for the example cache in front of the API, git for the test-list editing workflow.
test-servers:
	@missing=""; \
	command -v clickhouse-server >/dev/null || test -x /usr/bin/clickhouse || missing="$$missing clickhouse-server"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v git >/dev/null || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed (needs root):$$missing; the tests that need them will be skipped"; fi; \
	fi

test: $(TEST_STAMP) test-servers
	$(VENV)/bin/ruff check oonibackend workers tests bench
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check oonibackend workers tests bench

bench: $(TEST_STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) bench/run.py $(ARGS)
