# Two commands for a fresh machine: `make run` and `make test`.
# Both install exactly the versions in uv.lock (one lock for switchboard and switchboard-runtime)
# with uv, which installs itself from PyPI into .tools/ the first time.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := .tools/bin/uv
# Material's notice about its successor says nothing about this site.
export NO_MKDOCS_2_WARNING := 1
# uv uses this machine's Python 3.11 and never downloads one; the environment is .venv. It
# compiles what it installs to bytecode: uv does not by default, and where
# PYTHONDONTWRITEBYTECODE is set (CI's machine sets it) nothing is ever cached, so every
# process would compile FastAPI, SQLAlchemy, pydantic and the rest from source again.
UV_ENV := UV_PYTHON=$(PYTHON) UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV) UV_COMPILE_BYTECODE=1

.PHONY: run test upgrade docs docs-build bytecode node-packages bench-report lint typecheck format redteam bench bench-runtime bench-call-entry bench-warm-start bench-sign-in bench-servers bench-control-plane-burst bench-phone-side bench-peers bench-socket-layers bench-instant-answer bench-relay-path bench-guard-look soak clean

$(UV):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# --locked: a pyproject.toml changed without `make upgrade` (or `uv lock`) fails here, not later.
$(VENV)/.installed-run: pyproject.toml runtime/pyproject.toml uv.lock | $(UV)
	$(UV_ENV) $(UV) sync --locked --inexact --quiet
	@touch $@

$(VENV)/.installed-dev: pyproject.toml runtime/pyproject.toml uv.lock | $(UV)
	$(UV_ENV) $(UV) sync --locked --extra dev --quiet
	@touch $@ $(VENV)/.installed-run

## Set up, migrate, seed demo data, print demo tokens, serve on http://127.0.0.1:8000
run: $(VENV)/.installed-run
	$(BIN)/switchboard migrate
	$(BIN)/switchboard seed --demo
	$(BIN)/switchboard serve --host 127.0.0.1 --port 8000

# pytest-xdist workers: one per core (each module runs on one worker: tests/conftest.py).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

## Set up dev dependencies and the test servers, then lint, type-check and run the whole suite
# The checks and the test servers' Node packages run side by side (mypy works while npm
# unpacks); the suite starts once all of them have passed.
test: $(VENV)/.installed-dev
	$(MAKE) --no-print-directory -j4 --output-sync=target lint typecheck docs-build node-packages
	$(MAKE) --no-print-directory bytecode
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/test-services.sh $(BIN)/pytest -q --durations=30 -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The project's own sources as bytecode (only what changed since the last time): every xdist
# worker and every server or CLI a test starts would otherwise compile them again.
bytecode:
	$(BIN)/python -m compileall -q -j 0 control_plane runtime/switchboard_runtime migrations tests bench

docs-build:
	$(BIN)/mkdocs build --strict  # not --quiet: it hides the warnings strict mode counts

# What scripts/test-services.sh would install itself (openapi-typescript, unleash-server), when
# npm is here; it installs again only when a lock file changes.
node-packages: tests/frontend/node_modules/.package-lock.json tests/unleash_server/node_modules/.package-lock.json

tests/%/node_modules/.package-lock.json: tests/%/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: scripts/test-services.sh says what skips"; exit 0; }
	cd tests/$* && npm ci --no-audit --no-fund --loglevel=error >/dev/null

## The manual (docs/) as a site on http://127.0.0.1:8001, rebuilt as its pages change
docs: $(VENV)/.installed-dev
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

## The benchmarks page's table of current figures, from the newest results in bench/results/
bench-report: $(VENV)/.installed-dev
	$(BIN)/python bench/report.py

## Benchmarks: Switchboard vs unleash-server 7.x side by side (PostgreSQL, Node 20, wrk)
bench: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/test-services.sh $(BIN)/python bench/control_plane.py
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/call_entry.py
	$(BIN)/python bench/warm_start.py

## Runtime benchmark only: GrokRealtimeSession against the fake xAI on loopback
bench-runtime: $(VENV)/.installed-dev
	$(BIN)/python bench/runtime.py

## What authenticated call entry adds to a call start: signature and token checks, round trips
bench-call-entry: $(VENV)/.installed-dev
	$(BIN)/python bench/call_entry.py

## Warm vs cold call start: the phone's start to the first agent audio, at injected network delays
bench-warm-start: $(VENV)/.installed-dev
	$(BIN)/python bench/warm_start.py

## Memory under 100 concurrent wrong sign-ins, password hashing bounded vs unbounded
bench-sign-in: $(VENV)/.installed-dev
	$(BIN)/python bench/sign_in.py

## uvicorn vs granian: the control plane's hot reads, then bridged calls through the worker
bench-servers: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python bench/servers.py
	BENCH_CALLS=100 BENCH_WORKER_SERVER=uvicorn $(BIN)/python bench/runtime.py
	BENCH_CALLS=100 BENCH_WORKER_SERVER=granian $(BIN)/python bench/runtime.py

## A burst of control-plane requests from one worker: bounded (the worker's client) vs unbounded
bench-control-plane-burst: $(VENV)/.installed-dev
	$(BIN)/python bench/control_plane_burst.py

## The phone side of calls served under ASGI (the worker's stack) vs a bare Sans-I/O server
bench-phone-side: $(VENV)/.installed-dev
	$(BIN)/python bench/phone_side.py

## The call worker beside a pipecat bot per call: same fake xAI and phones, 25 to 400 calls
bench-peers: $(VENV)/.installed-dev
	$(BIN)/python bench/peers.py

## One hot read inside `switchboard serve`'s HTTP protocol, no socket: the server's own µs per request
bench-instant-answer: $(VENV)/.installed-dev
	$(BIN)/python bench/instant_answer.py

## What one look of the rollout guard costs, by how many calls its window holds (SQLite)
bench-guard-look: $(VENV)/.installed-dev
	$(BIN)/python bench/guard_look.py

## What the worker's Python spends relaying one media frame each way, in process (no sockets)
bench-relay-path: $(VENV)/.installed-dev
	$(BIN)/python bench/relay_path.py

## WebSocket layers for the media plane (websockets Sans-I/O, picows, uvicorn): CPU per frame;
## then a relay on picows in Python callbacks and the same in Cython (no Python per frame)
bench-socket-layers: $(VENV)/.installed-dev
	$(BIN)/python bench/socket_layers.py

## The hostile-client matrix against running processes on loopback: tried / expected / observed
redteam: $(VENV)/.installed-dev
	$(BIN)/python bench/redteam.py

## Bounded soak on loopback (SOAK_SECONDS, SOAK_RATE): errors and memory growth; then the
## cache-coherence state machine with 10x the examples of `make test`, 30 steps each
COHERENCE_EXAMPLES ?= 40
COHERENCE_STEPS ?= 30
soak: $(VENV)/.installed-dev
	$(BIN)/python bench/soak.py
	SWITCHBOARD_COHERENCE_EXAMPLES=$(COHERENCE_EXAMPLES) SWITCHBOARD_COHERENCE_STEPS=$(COHERENCE_STEPS) \
		PATH="$(CURDIR)/$(BIN):$$PATH" \
		scripts/test-services.sh $(BIN)/pytest -q tests/integration/test_cache_coherence.py -k "not twin"

## Re-resolve uv.lock to the newest versions pyproject.toml allows, then run the suite on them;
## commit the new lock only when it passes
upgrade: | $(UV)
	$(UV_ENV) $(UV) lock --upgrade
	rm -f $(VENV)/.installed-dev $(VENV)/.installed-run
	$(MAKE) test

lint:
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

typecheck:
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format:
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .tools switchboard.db switchboard.db-* .pytest_cache .mypy_cache .ruff_cache
