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

.PHONY: install run test lint test-servers bench
install: $(STAMP)

run: $(STAMP)
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

test: $(STAMP) test-servers
	$(VENV)/bin/ruff check oonibackend workers tests bench
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check oonibackend workers tests bench

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) bench/run.py $(ARGS)
