# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
GLUE_DIR ?= $(abspath ../shared/glue)
export GLUE_DIR

.PHONY: setup demo heads repository serve fleet test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m trunkserve.preflight
	touch $@

# Train small demo heads (capped GLUE subsets), build the repository, serve, call, stop.
demo: setup heads repository
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m trunkserve.demo --repo model_repository

heads: setup
	$(PY) -m trunkserve.training demo --out artifacts/heads

repository: setup
	$(PY) -m trunkserve.export build --heads artifacts/heads --out model_repository

# Serve in the foreground (Ctrl-C stops it): the launcher is the `tritonserver` command in the venv.
serve: setup
	PATH=$(abspath $(VENV))/bin:$$PATH tritonserver --model-repository model_repository

# Three replicas of the repository behind HAProxy (:8000 HTTP, :8001 gRPC) and Prometheus (:9090); Ctrl-C stops.
fleet: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m trunkserve.fleet --repo model_repository --replicas 3 --prometheus-port 9090

test: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q

clean:
	rm -rf $(VENV) build model_repository/*/ artifacts
