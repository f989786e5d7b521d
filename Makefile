# The two commands of the README: `make demo` and `make test`. Each sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check install sandbox lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) sandbox

# Scripts on the server run under bubblewrap (docs/security.md): install it when we can.
sandbox:
	@if [ -x /usr/bin/bwrap ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing bubblewrap (the script sandbox)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
	  echo "bubblewrap is missing: scripts on the server will be refused until it is installed"; \
	  echo "  as root: apt-get install bubblewrap   (or set CONVEYOR_ALLOW_UNSANDBOXED_SCRIPTS=true)"; \
	fi

demo: $(STAMP) sandbox
	$(BIN)/conveyor demo --port $${CONVEYOR_DEMO_PORT:-8080}

# Three workers on two cores: a tenth of the time the tests wait on real processes (leases
# expiring, sshd, browsers, servers starting); a third worker fills it (7:29 against ~9 min).
test: $(STAMP) sandbox
	$(BIN)/ruff check conveyor tests bench
	$(BIN)/ruff format --check conveyor tests bench
	$(BIN)/mypy conveyor
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -n 3 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check conveyor tests bench
	$(BIN)/ruff format --check conveyor tests bench
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy conveyor

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock:
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -q -o requirements.lock

clean:
	rm -rf $(VENV) .conveyor .pytest_cache .mypy_cache .ruff_cache
