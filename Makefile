# airflow-mlops: `make demo` runs the lifecycle scenario; `make test` runs the whole suite.
# Both create the virtualenv from requirements.lock first (a fast no-op when it is up to date).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP  := $(VENV)/.installed-lock

export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins
export GX_ANALYTICS_ENABLED := False
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help venv browser redis postgres up-prod down-prod status-prod demo-prod demo test test-fast test-e2e try-kube up down status bench bench-quick lint format lock clean

help:
	@echo "make demo   - run the whole lifecycle scenario on the embedded default (exit 0 = it held)"
	@echo "make test   - run the whole test suite"
	@echo "make up     - start Airflow (127.0.0.1:8080) and MLflow (127.0.0.1:5000) for interactive use"
	@echo "make down   - stop them"
	@echo "make up-prod   - start the native production stack (Postgres, Redis, moto S3, MLflow server,"
	@echo "                 Airflow with the CeleryExecutor and two workers) on 127.0.0.1; state/prod"
	@echo "make down-prod - stop it (make status-prod: what runs)"
	@echo "make demo-prod - the demo's lifecycle scenario on a fresh native production stack"
	@echo "make bench  - run the benchmarks (bench-quick: smaller sizes; scale.py starts the production stack)"
	@echo "make lint   - ruff check + ruff format --check + mypy (include/, plugins/)"

venv: $(STAMP)

$(STAMP): requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@echo "Installing the locked dependencies into $(VENV) (first time: a few minutes) ..."
	@$(VENV)/bin/uv pip sync --quiet --python $(PY) --compile-bytecode requirements.lock
	@touch $(STAMP)

demo: venv
	$(PY) -m tools.demo churn

# The Data Docs screenshot test renders a quarantine report in headless Chromium (Debian: chromium).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing chromium (headless browser for the Data Docs screenshot test) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium \
	    || echo "warning: chromium could not be installed; the screenshot test will be skipped"; }

# The native production stack's Celery broker (Debian: redis-server); tools/prod_stack.py runs it.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "Installing redis-server (Celery broker of the native production stack) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends redis-server \
	    && { $$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $$SUDO service redis-server stop >/dev/null 2>&1 || true; }; }

# The production tests run a throwaway Postgres cluster (tools/postgres.py) from Debian's server
# binaries (/usr/lib/postgresql/<version>/bin); a missing server fails those tests, it never skips them.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { \
	  echo "Installing postgresql (server binaries for the production tests) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends postgresql; }

test: venv browser redis postgres
	$(PY) -m pytest -n 2 --dist loadscope

test-fast: venv browser redis postgres
	$(PY) -m pytest -m "not e2e and not slow"

# Try a spec with a Kubernetes backend on the emulated cluster: make try-kube SPEC=path/to/spec.yaml [DATASET=churn]
try-kube: venv
	@test -n "$(SPEC)" || { echo "usage: make try-kube SPEC=path/to/spec.yaml [DATASET=churn|housing]"; exit 2; }
	$(PY) -m tools.kube_trial $(SPEC) $(if $(DATASET),--dataset $(DATASET))

test-e2e: venv
	$(PY) -m pytest -m e2e

up: venv
	$(PY) -m tools.stack up

down: venv
	$(PY) -m tools.stack down

status: venv
	$(PY) -m tools.stack status

# The production configuration run natively (tools/prod_stack.py; docs/deploy.md, "Native production stack").
up-prod: venv redis postgres
	$(PY) -m tools.prod_stack up

down-prod: venv
	$(PY) -m tools.prod_stack down

status-prod: venv
	$(PY) -m tools.prod_stack status

demo-prod: venv redis postgres
	$(PY) -m tools.prod_stack demo

bench: venv
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

bench-quick: venv
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate the lock after editing requirements.txt (universal: Python 3.11 and 3.12, any platform).
lock: venv
	$(VENV)/bin/uv pip compile requirements.txt --universal --python-version 3.11 -o requirements.lock

clean: down
	rm -rf state
