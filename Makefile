# The three commands of the README: make install | make demo | make test
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
BIN := $(VENV)/bin

# Data and weights that cannot be downloaded live in ../shared (read-only, never committed).
export FROSTED_SHARED ?= $(abspath $(SHARED))
ifneq ($(wildcard $(SHARED)/assets/faceboxes/FaceBoxesProd.pth),)
export FROSTED_WEIGHTS ?= $(abspath $(SHARED)/assets/faceboxes/FaceBoxesProd.pth)
endif

.PHONY: install demo test lint bench profiles

# The shipped profiles' protocol: fit on MIT+CMU folds 1-5 by distillation (labels unused), so that
# MIT+CMU folds 6-10 and dlib stay unseen for AP, and every unlabelled photo stays unseen for the attacks.
ALPHAS := 0.05 0.1 0.2 0.4 0.6 0.8 0.9 0.95
FIT_ARGS := --coco $(SHARED)/data/faces/mitcmu/labels.json --use-folds 1-5 --task distill --tune-tail \
	--epochs 10 --augmentations 3 $(if $(THREADS),--threads $(THREADS))

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned to the CPU build: an unpinned torch pulls several GB of CUDA libraries
	$(BIN)/pip install --quiet torch==2.13.0 -e '.[dev]'

demo:
	$(BIN)/frosted detect --sample astronaut --draw demo-output

lint:
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -q --timeout 300

bench:
	$(BIN)/python bench/bench_model.py

profiles:
	for a in $(ALPHAS); do \
		$(BIN)/frosted fit-noise --alpha $$a $(FIT_ARGS) --out facesplit/profiles/alpha-$$a.safetensors || exit 1; \
	done
