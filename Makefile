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

.PHONY: install demo test lint bench

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
