# Shopmesh developer commands. The README's two: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
TOOLS_STAMP := .tools/.installed-$(shell cat infra/tools.sh package-lock.json 2>/dev/null | sha1sum | cut -c1-12)

export PYTHONPATH := $(CURDIR)
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/node_modules/.bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install tools run test test-quick infra-up infra-down infra-status protos lint migrate token bench bench-full k8s-validate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(VENV_STAMP) $(TOOLS_STAMP) ## create the virtualenv and install Python deps and tools

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check 'uv>=0.5,<1'
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev,infra]'
	@rm -f $(VENV)/.installed-*; touch $@

$(TOOLS_STAMP): infra/tools.sh package.json package-lock.json
	bash infra/tools.sh
	@rm -f .tools/.installed-*; touch $@

tools: $(TOOLS_STAMP) ## install buf (npm) and the Go tools (grpcurl, ghz, promtool, kustomize, kubeconform)

run: install ## start infrastructure and the whole mesh with demo data; Ctrl-C stops it
	$(PY) -m infra run-mesh

test: install ## start what is missing, run every test (fault suite last), stop what was started
	$(PY) -m infra exec -- $(PY) -m pytest tests

test-quick: install ## like `make test` without the fault-injection suite
	$(PY) -m infra exec -- $(PY) -m pytest tests -m "not fault"

infra-up: install ## fetch and start PostgreSQL, Valkey, Kafka, OpenSearch
	$(PY) -m infra up

infra-down: ## stop the local infrastructure
	$(PY) -m infra down

infra-status: ## show which servers run and where
	$(PY) -m infra status

migrate: install ## apply every service's SQL migrations
	$(PY) -m meshkit.migrate

protos: install ## regenerate generated/ from protos/
	bash protos/generate.sh

lint: install ## ruff and buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd protos && buf lint

token: install ## mint a demo user token and an admin token
	$(PY) -m shopctl token mint --user demo-user
	$(PY) -m shopctl token mint --user demo-admin --role admin

k8s-validate: install ## build every kustomize overlay and validate it offline
	bash k8s/validate.sh

bench: install ## run the benchmark suite and write docs/PERFORMANCE.md
	$(PY) -m infra exec -- $(PY) -m bench

bench-full: install ## bench plus the 1M-product runs
	$(PY) -m infra exec -- $(PY) -m bench --full
