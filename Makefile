# mlref: `make demo` runs every app's demo offline; `make test` runs the test suite. Both build what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CHATBOT_VENV := .venv-chatbot
MAIN_STAMP := $(VENV)/.installed
CHATBOT_STAMP := $(CHATBOT_VENV)/.installed
APPS := $(sort $(patsubst apps/%/__main__.py,%,$(wildcard apps/*/__main__.py)))
PYTEST_ARGS ?=
export OPENBLAS_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: help new-app setup setup-main setup-chatbot demo test test-fast probe bench lint format clean ui screenshots \
	$(addprefix demo-,$(APPS)) $(addprefix bench-,$(APPS)) $(addprefix serve-,$(APPS)) demo-lifecycle

help:  ## list the targets
	@grep -E '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 22
	@grep -E '^\$$\(addprefix [a-z]+-,\$$\(APPS\)\):.*## ' $(MAKEFILE_LIST) | sed 's/.*## //' | expand -t 22
	@echo "apps: $(APPS)"

setup: setup-main setup-chatbot  ## build .venv (Python 3.11) and .venv-chatbot (Python 3.10 + Rasa)

setup-main: $(MAIN_STAMP)

$(MAIN_STAMP): requirements/main.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null && $(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11)' \
	  || { echo "error: $(PYTHON) (Python 3.11) not found. Install it, e.g. 'apt-get install python3.11 python3.11-venv'"\
	            "or 'pyenv install 3.11', or run 'make PYTHON=/path/to/python3.11 ...'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/main.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .  # importable packages + the mlref command
	@touch $@

setup-chatbot: $(CHATBOT_STAMP)

$(CHATBOT_STAMP): requirements/chatbot.txt requirements/chatbot-nodeps.txt
	@py310=$${PY310:-$$(scripts/find-python.sh 3.10)} || exit 1; [ -n "$$py310" ] || exit 1; \
	  echo "using $$py310 for $(CHATBOT_VENV)"; \
	  $$py310 -m venv $(CHATBOT_VENV) && \
	  $(CHATBOT_VENV)/bin/python -m pip install --quiet --upgrade 'pip<25' && \
	  $(CHATBOT_VENV)/bin/python -m pip install --quiet -r requirements/chatbot.txt && \
	  $(CHATBOT_VENV)/bin/python -m pip install --quiet --no-deps -r requirements/chatbot-nodeps.txt
	@touch $@

demo: setup-main  ## every app's demo, offline, on embedded data (and the lifecycle example)
	$(PY) -m examples.lifecycle
	@for app in $(APPS); do echo "=== demo $$app"; $(PY) -m apps.$$app demo || exit 1; done

demo-lifecycle: setup-main  ## the common/ lifecycle on a tiny scikit-learn model
	$(PY) -m examples.lifecycle

$(addprefix demo-,$(APPS)): demo-%: setup-main  ## demo-<app>: one app's demo
	$(PY) -m apps.$* demo

test: setup-main setup-chatbot  ## unit + end-to-end tests (no real data, no network), with line coverage of common/ and apps/
	$(PY) -m pytest -m "not bench" --cov --cov-report=term:skip-covered --durations=15 $(PYTEST_ARGS)

test-fast: setup-main  ## the fast tier (~2 min): no end-to-end runs, no Rasa training, no probes, no benchmarks
	$(PY) -m pytest -m "not bench and not e2e and not reliability and not slow" -q --durations=5 $(PYTEST_ARGS)

probe: setup-main  ## reliability probes per app (fuzzing, limits, API key, load, kill -9): table -> bench/results/probe.md, README
	@rm -f bench/results/probe.jsonl
	@status=0; MLREF_PROBE_OUT=$(CURDIR)/bench/results/probe.jsonl $(PY) -m pytest -m reliability -q $(PYTEST_ARGS) \
	  || status=$$?; $(PY) -m mlref_testing.probe bench/results/probe.jsonl --readme || status=$$((status ? status : $$?)); \
	  exit $$status

bench: setup-main  ## every app's benchmark on real data (MLREF_DATA_DIR, default ../shared/data)
	@for app in $(APPS); do echo "=== bench $$app"; \
	  MLREF_DATA_DIR=$${MLREF_DATA_DIR:-../shared/data} $(PY) -m apps.$$app bench || exit 1; done
	$(PY) -m bench.report

$(addprefix bench-,$(APPS)): bench-%: setup-main  ## bench-<app>: one app's benchmark
	MLREF_DATA_DIR=$${MLREF_DATA_DIR:-../shared/data} $(PY) -m apps.$* bench
	$(PY) -m bench.report

$(addprefix serve-,$(APPS)): serve-%: setup-main  ## serve-<app>: the app's champion on 127.0.0.1:8000
	$(PY) -m apps.$* serve

.PHONY: redis
REDIS_PORT ?= 6379
redis:  ## a Redis for the shared state (MLREF_REDIS_URL=redis://127.0.0.1:6379/0): loopback, append-only file in .mlref/redis
	@command -v redis-server >/dev/null || { echo "error: redis-server not found: apt-get install redis-server" >&2; exit 1; }
	@mkdir -p .mlref/redis
	redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly yes --dir .mlref/redis

ui: setup-main  ## web console on 127.0.0.1:7860: each app's service (champion, else the demo's model); Ctrl-C stops all
	$(PY) -m console

screenshots: setup-main  ## docs/screenshots/*.png + timings.json (console timings), from the browser tests
	MLREF_SCREENSHOTS=$(CURDIR)/docs/screenshots MLREF_CONSOLE_TIMINGS=$(CURDIR)/docs/screenshots/timings.json \
	  $(PY) -m pytest tests/console/test_browser.py -q $(PYTEST_ARGS)

# the chatbot drives Rasa in .venv-chatbot: its targets build that environment too
demo-chatbot serve-chatbot bench-chatbot: setup-chatbot

LINT_DIRS := $(wildcard common apps console tests bench scripts mlref_testing examples)

lint: setup-main  ## ruff check + ruff format --check + mypy of common/ (config: pyproject.toml [tool.mypy])
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)
	$(VENV)/bin/mypy

format: setup-main  ## ruff format + safe fixes
	$(VENV)/bin/ruff format $(LINT_DIRS)
	$(VENV)/bin/ruff check --fix $(LINT_DIRS)

new-app: setup-main  ## new-app NAME=bc FROM=table.csv TARGET=label [ID= TIME= TASK= OUT=dir]: an app from your table (no FROM: churn example)
	@[ -n "$(NAME)" ] || { echo "usage: make new-app NAME=bc FROM=table.csv TARGET=label [ID=col] [TIME=col]"\
	  "[TASK=classification|regression] [OUT=dir]  (without FROM: the churn example)" >&2; exit 2; }
	$(PY) -m common.scaffold $(NAME) $(if $(FROM),--from "$(FROM)") $(if $(TARGET),--target "$(TARGET)") \
	  $(if $(ID),--id "$(ID)") $(if $(TIME),--time "$(TIME)") $(if $(TASK),--task "$(TASK)") $(if $(OUT),--out "$(OUT)")

clean:  ## remove caches and MLREF_HOME (keeps the virtualenvs)
	rm -rf .mlref .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
