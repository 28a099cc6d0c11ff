# Humanline — every command a newcomer or CI needs. Each target installs what it needs first.
SHELL := /bin/bash
# Rasa 3.6 needs Python 3.10: the first candidate that really runs (a pyenv shim may not).
PYTHON310 ?= $(shell for p in $(HOME)/.pyenv/versions/3.10.*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10 python3.10; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: install train run cluster test test-fast eval eval-dialogue bench bench-cluster lint browser-deps clean screenshots

install: $(STAMP)
	@echo "==> [1/4 install] $(VENV) ready"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON310)" || { echo "Python 3.10 is required (Rasa 3.6 does not run on 3.11): install it, e.g. pyenv install 3.10.13"; exit 1; }
	@test -x $(PY) || { echo "==> creating $(VENV) with $(PYTHON310)"; $(PYTHON310) -m venv $(VENV); }
	@echo "==> [1/4 install] Humanline and its dependencies into $(VENV) (first time: 1-2 minutes, mostly TensorFlow)"
	$(PY) -m pip install --quiet --upgrade pip wheel "setuptools<70" uv
	@# uv resolves to the same versions as pip and downloads in parallel: minutes faster on a fresh machine
	@# --compile-bytecode: uv writes no .pyc by default, and then the first start of every brain
	@# worker compiles Rasa and TensorFlow itself (tens of seconds of CPU each)
	$(VENV)/bin/uv pip install --compile-bytecode --python $(PY) -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

## train: train the Rasa model unless one for the current config, domain and data exists
train: install
	@echo "==> [2/4 train] the Rasa model, unless one for the current config, domain and data exists"
	@$(PY) -m bot train

## run: install, train if needed, migrate, then start the hub and the action server; a box with the
## URLs and the demo account appears once /healthz answers 200 (bot/banner.py)
run: train
	@echo "==> [3/4 migrate] applying the database migrations"
	@$(PY) -m bot migrate
	@echo "==> [4/4 start] the action server and the hub; a box with the addresses follows once the model has loaded"
	@$(PY) -m bot serve

## cluster: HUBS hubs (default 2) on the machine's PostgreSQL and Redis, one action server and HAProxy
## (installed from Debian's packages when missing) round-robin in front; prints the URL (bot/cluster.py)
HUBS ?= 2
cluster: train
	@bash scripts/install-haproxy.sh
	@$(PY) -m bot.cluster --hubs $(HUBS)

browser-deps:
	@bash scripts/install-browser.sh

## test: install, train if needed, install the browser, then run every test
test: train browser-deps
	$(PY) -m ruff check bot actions tests bench scripts
	$(PY) -m mypy
	$(PY) -m pytest -ra

## test-fast: the tests that need neither the model nor a browser
test-fast: install
	$(PY) -m pytest -ra -m "not model and not browser and not slow"

## eval: NLU accuracy and macro-F1 per language, external test sets, and the stock-pipeline baseline
eval: install
	$(PY) -m bot eval

## eval-dialogue: the scripted multi-turn conversations (eval/dialogues) through the real hub, scored
eval-dialogue: train
	$(PY) -m bot eval-dialogue

## bench: the hub against stock `rasa run` on the same model, then (issue #15) stock Rasa in one and in
## several processes beside 1 hub and 2 hubs behind HAProxy on PostgreSQL + Redis (bench-cluster)
bench: train
	$(PY) -m bench
	@bash scripts/install-haproxy.sh
	$(PY) -m bench cluster

## bench-cluster: stock Rasa (1 process; SANIC_WORKERS=2 + Redis + PostgreSQL) against 1 hub and 2 hubs behind HAProxy
bench-cluster: train
	@bash scripts/install-haproxy.sh
	$(PY) -m bench cluster

## screenshots: the README's pictures, taken by the browser tests
screenshots: train browser-deps
	HUMANLINE_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_browser.py tests/test_browser_analytics.py tests/test_browser_case.py tests/test_browser_resolve.py

lint: install
	$(PY) -m ruff check bot actions tests bench scripts
	$(PY) -m mypy

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache humanline.db humanline.db.tracker.db .cluster
