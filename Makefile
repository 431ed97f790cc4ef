# Two commands on a fresh clone:  `make run`  (set up and start everything)  and  `make test`  (set up and test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test test-deps lint extension model export clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,train]"
	touch $@

setup: $(VENV)/.installed ## Create .venv and install fakewatch with its training and test tools

run: setup ## Start API, workers and console on the embedded default (SQLite, no servers needed)
	$(VENV)/bin/fakewatch up

test-deps: setup ## Browser and linter the extension/console tests drive (Debian's chromium; web-ext from npm)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@if [ -f extension/package.json ]; then cd extension && npm ci --no-audit --no-fund --loglevel=error; fi

lint: setup ## Lint (ruff: style, import order, bugbear) and type-check (mypy) the whole tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: test-deps lint ## Lint, type-check, then run the whole test suite (needs PostgreSQL and Redis on 127.0.0.1)
	$(PY) -m pytest

extension: setup ## Package the browser extension for Chrome and Firefox (zips in extension/dist/)
	$(PY) extension/package.py

DATA ?= ../shared/data
FACES := $(foreach d,faces-stylegan2 faces-faceswap faces-photoshop real-extra,--data $(DATA)/$(d))
EVERYTHING := $(FACES) $(foreach d,realorai_alkemist diffusion_trio_vs_imagenet sd15_cats_vs_oxford_pets sd_classimages_fakeonly,--data $(DATA)/$(d))
TRAIN := $(VENV)/bin/fakewatch train --arch default
# Fine-tunes at the architecture's full rate, as the shipped model was made (a bare --init-from takes a third).
TUNE := --learning-rate 0.002

model: setup ## Retrain the shipped default from the shared datasets on the CPU (about 2 hours on 2 cores)
	# Stages 1-5 on the face sets: random crops anywhere, then crops centred on the middle third.
	$(TRAIN) $(FACES) --crops-per-image 3 --epochs 40 --crop-span 1 --out var/models/stage1/default.keras
	$(TRAIN) $(FACES) --crops-per-image 3 --epochs 20 --crop-span 1 $(TUNE) --init-from var/models/stage1/default.keras --out var/models/stage2/default.keras
	$(TRAIN) $(FACES) --crops-per-image 3 --epochs 20 --crop-span 1 $(TUNE) --init-from var/models/stage2/default.keras --out var/models/stage3/default.keras
	$(TRAIN) $(FACES) --crops-per-image 3 --epochs 20 --crop-span 0.34 $(TUNE) --init-from var/models/stage3/default.keras --out var/models/stage4/default.keras
	$(TRAIN) $(FACES) --crops-per-image 3 --epochs 20 --crop-span 0.34 $(TUNE) --init-from var/models/stage4/default.keras --out var/models/stage5/default.keras
	# Stage 6 on all eight sets, balanced across sets and classes, crops edge to edge (the serving grid).
	# var/models/stage5 stays: benchmarks/adaptation.py and generalisation.py --base start from it.
	$(TRAIN) $(EVERYTHING) --epochs 20 --steps-per-epoch 200 --crop-span 1 $(TUNE) --init-from var/models/stage5/default.keras --out models/shipped/default.keras

export: setup ## Export the shipped default (models/shipped/default.keras) to LiteRT beside it, listed in its metadata
	$(VENV)/bin/fakewatch export-model models/shipped/default.keras

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts
