# The commands of the README: make demo | make test (each builds the environment first when it needs to) and
# make install (only the environment)
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
BIN := $(VENV)/bin
# Touched by a finished install: a .venv without it (missing, or an install cut short) or older than
# pyproject.toml is rebuilt by whatever target needs it
INSTALLED := $(VENV)/.installed

# Data and weights that cannot be downloaded live in ../shared (read-only, never committed).
export FROSTED_SHARED ?= $(abspath $(SHARED))
ifneq ($(wildcard $(SHARED)/assets/faceboxes/FaceBoxesProd.pth),)
export FROSTED_WEIGHTS ?= $(abspath $(SHARED)/assets/faceboxes/FaceBoxesProd.pth)
endif

.PHONY: install system-deps demo test lint bench bench-live bench-soak profiles proto

# The shipped profiles' protocol: fit on MIT+CMU folds 1-5 by distillation (labels unused), so that
# MIT+CMU folds 6-10 and dlib stay unseen for AP, and every unlabelled photo stays unseen for the attacks.
# The alpha grid is per channel (TR-4928's form, comparable with its table); rank$(RANK)-alpha-$(RANK_ALPHA) adds
# the noise along the activation's RANK principal channel directions only and drops the rest (its fine detail):
# less AP, less for the inversion attack (bench/results/privacy_table.md). bench_model.py's BASIS_RANK = RANK.
# information-dct-alpha-$(INFO_ALPHA) keeps every direction, in a full principal basis and per spatial frequency
# (so its coordinates are nearly uncorrelated), and is fitted with the information privacy term: the noise
# goes where there is signal to hide. Its noise-aware tail then trains 30 more epochs alone, the noise frozen:
# +0.6 AP points on held-out MIT+CMU (0.957 -> 0.963, 5 noise draws) at the same privacy.
ALPHAS := 0.05 0.1 0.2 0.4 0.6 0.8 0.9 0.95
# inception3-alpha-A: the same fit with the head ending after the third Inception block (--split inception3),
# whose activation an attacker cannot invert to a recognisable face (bench/results/attack_budget.md)
DEEP_ALPHAS := 0.2 0.4 0.6 0.8
# inception3-adversarial-$(ADVERSARY_ALPHA): the deep fit against the linear identity probe trained on the attacker's
# faces (retrained on the current noise every epoch), then the noise-aware tail alone for 20 epochs;
# inception3-adversarial-mlp-$(ADVERSARY_ALPHA): the same against the MLP probe too, in alternating steps
# (docs/privacy.md: the MLP one holds every fresh attacker to 1.9 % rank-1 among 100 at 96 px, the linear one to
# 2.5 %, for -2.5 and -2.1 AP points: records of those experiments, not the default)
ADVERSARY_ALPHA := 0.2
ADVERSARY_FACES ?= $(SHARED)/data/faces/attacker
RANK := 48
RANK_ALPHA := 0.2
# inception3-rank$(DEEP_RANK)-alpha-$(DEEP_RANK_ALPHA), the product's default (facesplit/noise/__init__.py): the deep
# split, and only the activation's DEEP_RANK principal channel directions leave the site, noised; its noise-aware
# tail then trains 60 epochs alone. docs/privacy.md: it holds the converged MLP probe to 1.8 % rank-1 among 100 at
# 96 px, for 1.7 AP points on MIT+CMU (0.1 on dlib)
DEEP_RANK := 16
DEEP_RANK_ALPHA := 0.4
INFO_ALPHA := 0.7
FIT_ARGS := --coco $(SHARED)/data/faces/mitcmu/labels.json --use-folds 1-5 --task distill --tune-tail \
	--epochs 10 --augmentations 3 --seed 0 $(if $(THREADS),--threads $(THREADS))

# What the live-service tests start for real (TESTRIG.md): GStreamer's RTSP server (run under Debian's own
# python3, the one with python3-gi), Prometheus, and chromium for the preview page (driven by playwright);
# libpython3.11 for Triton's python-backend stub (tests/test_triton.py). Installed when we are root on apt;
# otherwise listed.
SYSTEM_PACKAGES := gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-tools \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gir1.2-gstreamer-1.0 prometheus \
	chromium fonts-dejavu-core libpython3.11

APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES)

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || $(APT_INSTALL) || { apt-get update -qq && $(APT_INSTALL); }; \
	else echo "not root on apt: the live-service tests need: $(SYSTEM_PACKAGES) (they skip without them)"; fi

# Always installs (for those who want the environment alone, or a fresh one); the targets below need only
# $(INSTALLED), and so install only when it is missing or stale.
install: system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned to the CPU build: an unpinned torch pulls several GB of CUDA libraries
	$(BIN)/pip install --quiet torch==2.13.0 -e '.[dev]'
	# tests/test_triton.py's real Triton: only the tritonserver binary and python backend that nvidia-pytriton
	# bundles. --no-deps: its Python client pins numpy<2 and (through tritonclient) protobuf<7, which would
	# downgrade this environment; nothing here imports it (the agent has its own KServe stubs, triton_wire/).
	$(BIN)/pip install --quiet --no-deps nvidia-pytriton==0.7.0
	touch $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(MAKE) --no-print-directory install

# The live path in one command: a clip made from scikit-image's astronaut, edge agent -> gRPC (mTLS) -> tail.
demo: $(INSTALLED)
	$(BIN)/frosted demo

lint: $(INSTALLED)
	$(BIN)/ruff check .

test: $(INSTALLED) lint
	$(BIN)/pytest -q --timeout 300

bench: $(INSTALLED)
	$(BIN)/python bench/bench_model.py

bench-live: $(INSTALLED)
	$(BIN)/python bench/bench_live.py

# ten minutes: four RTSP cameras -> agent -> tail, a camera and the tail restarted (bench/README.md)
bench-soak: $(INSTALLED)
	OMP_NUM_THREADS=1 $(BIN)/python bench/soak.py

profiles: $(INSTALLED)
	for a in $(ALPHAS); do \
		$(BIN)/frosted fit-noise --alpha $$a $(FIT_ARGS) --out facesplit/profiles/alpha-$$a.safetensors || exit 1; \
	done
	for a in $(DEEP_ALPHAS); do \
		$(BIN)/frosted fit-noise --split inception3 --alpha $$a $(FIT_ARGS) \
			--out facesplit/profiles/inception3-alpha-$$a.safetensors || exit 1; \
	done
	$(BIN)/frosted fit-noise --split inception3 --alpha $(ADVERSARY_ALPHA) --tail-epochs 20 \
		--adversary-faces $(ADVERSARY_FACES) --adversary-weight 2 $(FIT_ARGS) \
		--out facesplit/profiles/inception3-adversarial-$(ADVERSARY_ALPHA).safetensors
	$(BIN)/frosted fit-noise --split inception3 --alpha $(ADVERSARY_ALPHA) --tail-epochs 20 \
		--adversary-faces $(ADVERSARY_FACES) --adversary-weight 2 --adversary-probe mlp $(FIT_ARGS) \
		--out facesplit/profiles/inception3-adversarial-mlp-$(ADVERSARY_ALPHA).safetensors
	$(BIN)/frosted fit-noise --alpha $(RANK_ALPHA) --rank $(RANK) $(FIT_ARGS) \
		--out facesplit/profiles/rank$(RANK)-alpha-$(RANK_ALPHA).safetensors
	$(BIN)/frosted fit-noise --split inception3 --alpha $(DEEP_RANK_ALPHA) --rank $(DEEP_RANK) --tail-epochs 60 $(FIT_ARGS) \
		--out facesplit/profiles/inception3-rank$(DEEP_RANK)-alpha-$(DEEP_RANK_ALPHA).safetensors
	$(BIN)/frosted fit-noise --alpha $(INFO_ALPHA) --rank 128 --dct --privacy information --tail-epochs 30 $(FIT_ARGS) \
		--out facesplit/profiles/information-dct-alpha-$(INFO_ALPHA).safetensors

# The wire contract's Python stubs, from proto/ only (checked in; tests/test_wire.py checks they match).
proto: $(INSTALLED)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/frosted_wire/v1/tail.proto
	# Triton's KServe v2 service and model config (proto/triton_wire/: Triton's files, their import path adapted)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/triton_wire/grpc_service.proto proto/triton_wire/model_config.proto
