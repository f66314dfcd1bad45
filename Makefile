# mailhost: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check pytest system-deps dovecot bench bench-store bench-smtp bench-imap bench-pop3 bench-eas bench-queue clean

# A venv with the project installed in editable mode and the test tools.
# Debian's python3 has no ensurepip until python3-venv is installed: do that when root.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	    rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	  else echo "make: '$(PYTHON) -m venv' failed; install python3-venv" >&2; exit 1; fi; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Development instance in ./var (created once), every listener at port + 10000.
run: $(STAMP)
	@test -d var || $(BIN)/mailhost init --dev
	exec $(BIN)/mailhost serve --dev

# Debian tools the tests drive as real clients (swaks, libwbxml, ...); installed when root.
system-deps:
	@sh scripts/system-deps.sh

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: $(STAMP) system-deps
	$(BIN)/pytest -q -n 2

test: check pytest

bench: bench-store bench-smtp bench-queue bench-imap bench-pop3 bench-eas

bench-store: $(STAMP)
	$(BIN)/python -m bench.store

# smtp-source comes with Postfix; only the tool is used (and Postfix itself, side by side,
# on a private port when it is not configured for anything else).
bench-smtp: $(STAMP) system-deps
	@command -v smtp-source >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null; } || true
	$(BIN)/python -m bench.smtp

bench-queue: $(STAMP)
	$(BIN)/python -m bench.queue

bench-imap: $(STAMP) system-deps dovecot
	$(BIN)/python -m bench.imap

bench-pop3: $(STAMP) system-deps dovecot
	$(BIN)/python -m bench.pop3

bench-eas: $(STAMP)
	$(BIN)/python -m bench.eas

# Dovecot, for side-by-side figures only: its packages' own service is not started here.
dovecot:
	@command -v dovecot >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-pop3d >/dev/null; } || true

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
