# Two commands do all set-up on a fresh machine:
#   make run    start the whole backend on embedded defaults (chdb, local spool) on :8000
#   make test   install everything the tests need and run them
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg | sha1sum | cut -c1-12)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# one resolution for runtime and test pins (moto must not upgrade aiobotocore's botocore)
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

.PHONY: install run test lint clickhouse-server bench
install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/oonibackend run $(ARGS)

# Debian's clickhouse-server (18.16) is started by the tests for native-protocol checks.
clickhouse-server:
	@if ! command -v clickhouse-server >/dev/null && ! test -x /usr/bin/clickhouse; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null; \
	  else echo "clickhouse-server not installed (needs root): native-driver tests will be skipped"; fi; \
	fi

test: $(STAMP) clickhouse-server
	$(VENV)/bin/ruff check oonibackend workers tests bench
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check oonibackend workers tests bench

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) bench/run.py $(ARGS)
