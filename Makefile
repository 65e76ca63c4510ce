# The course's commands. `make course` and `make test` each do the set-up they need.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODEL := models/fraud-v1.trees.npz
PROFILE ?= ci

.PHONY: setup system course test lab bench notebooks check down clean

setup: system $(STAMP) $(MODEL)

system:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || "$$(bash scripts/pick-python.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name uptime-playbook --display-name "Uptime playbook"
	@touch $(STAMP)

# The replicas serve the trees file; a models/ made before it existed gets v1 retrained.
$(MODEL): | $(STAMP)
	$(PY) -m stack.model.train --model-dir models --version v1 $(if $(wildcard models/manifest.json),--force)

# `make course PROFILE=workshop PARAMS="traffic_rate=20 time_scale=3"` overrides parameters
course: setup
	$(PY) -m stack.course --profile $(PROFILE) $(foreach p,$(PARAMS),-p $(p))

test: setup
	$(PY) -m pytest

lab: setup
	$(PY) -m pip install -q -e '.[lab]'
	$(VENV)/bin/jupyter lab notebooks

bench: setup
	$(PY) -m stack.bench

# Re-execute the notebooks in place with their CI parameters (the outputs nbval compares).
notebooks: setup
	$(PY) -m stack.course --profile ci --in-place

WEEK ?= 1
# `make check WEEK=2` checks exercises/week2/ against a live lab; SOLUTIONS=1 checks the solutions
check: setup
	$(PY) -m stack.check week$(WEEK) $(if $(SOLUTIONS),--solutions)

down:
	@test -x $(VENV)/bin/stackctl && $(VENV)/bin/stackctl down || true

clean: down
	rm -rf reports
