# Set-up is part of each target: a fresh machine needs only Python 3.11 and make.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.saal_tasks_installed
# The OpenMMLab stack (mmdet, mmseg, mmcv): see the detection section at the end.
DET_STAMP := $(VENV)/.saal_tasks_openmmlab_installed

.PHONY: setup demo test lint setup-det demo-det demo-seg mmcv-full

setup: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 'setuptools<82' wheel
	# From this machine's local package cache; other torch versions would download gigabytes.
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The embedded default: SAAL on scikit-learn's digits (about 20 s on 2 cores once set up).
demo: $(STAMP)
	$(PY) tools/train_al.py configs/cls/saal_cnn_digits.py \
		--work-dir work_dirs/saal_cnn_digits/$$(date +%Y%m%d_%H%M%S)

test: lint $(DET_STAMP)
	$(PY) -m pytest

# ruff on the package, mypy on the contracts and the engine (setup.cfg, ruff.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check saal_tasks
	$(VENV)/bin/mypy

# ---------------------------------------------------------------- detection (mmdet 3.3.0)
# mmcv 2.1.0 with compiled ops, only from a local wheel cache beside the checkout (shared/);
# used when it installs and `import mmcv.ops` works. Otherwise mmcv-lite, and SSD's NMS comes
# from torchvision (saal_tasks/compat/mmcv_ops.py). `make mmcv-full` builds the real one.
MMCV_WHEEL ?= $(firstword $(wildcard ../shared/wheels/mmcv-2.1.0-*.whl))
MMCV_LITE := $(shell grep '^mmcv-lite' requirements/detection.txt)
DEMO_VOC := data/voc_demo/VOCdevkit
MMCV_SRC := build/mmcv-src

setup-det: $(DET_STAMP)

$(DET_STAMP): $(STAMP) requirements/detection.txt requirements/segmentation.txt
	# mmdet, mmseg and their needs (neither declares mmcv; it is chosen below).
	$(PIP) install --quiet $$(cat requirements/detection.txt requirements/segmentation.txt | \
	    grep -v -e '^#' -e '^-r' -e '^mmcv' | sort -u)
	@if [ -n "$(MMCV_WHEEL)" ] && { $(PIP) uninstall --quiet --yes mmcv-lite >/dev/null 2>&1; \
	    $(PIP) install --quiet "$(MMCV_WHEEL)"; } && $(PY) -c 'import mmcv.ops' >/dev/null 2>&1; then \
	    echo "mmcv: compiled ops from $(MMCV_WHEEL)"; \
	else \
	    $(PIP) uninstall --quiet --yes mmcv >/dev/null 2>&1; \
	    $(PIP) install --quiet '$(MMCV_LITE)' && \
	    echo "mmcv: $(MMCV_LITE); SSD's NMS from torchvision (saal_tasks/compat/mmcv_ops.py)"; \
	fi
	touch $(DET_STAMP)

# The detection demo: a tiny SSD on generated VOC-layout data (about 2 minutes on 2 cores).
# One torch thread: the tiny model's convolutions gain nothing from two, and two OpenMP
# threads slow down badly when anything else runs on the cores.
demo-det: $(DET_STAMP)
	@test -f $(DEMO_VOC)/VOC2007/ImageSets/Main/test.txt || $(PY) tools/make_voc_demo.py --root $(DEMO_VOC)
	OMP_NUM_THREADS=1 $(PY) tools/train_al.py configs/det/ssd_tiny_voc_demo.py \
		--work-dir work_dirs/ssd_tiny_voc_demo/$$(date +%Y%m%d_%H%M%S)

# The segmentation demo: RI-SAAL with a tiny DeepLab-v2-shaped model on generated SYNTHIA- and
# Cityscapes-layout data, 2 selections inside one 900-iteration run (about 2 minutes).
SEG_DEMO := data/seg_demo
demo-seg: $(DET_STAMP)
	@test -f $(SEG_DEMO)/seg_demo.json || $(PY) tools/make_seg_demo.py --root $(SEG_DEMO)
	$(PY) tools/train_al.py configs/seg/ri_saal_tiny_demo.py \
		--work-dir work_dirs/ri_saal_tiny_demo/$$(date +%Y%m%d_%H%M%S)

# Opt-in: mmcv 2.1.0 with its compiled CPU ops, built from source (over an hour on 2 cores).
# torch 2.14's headers need C++20, while mmcv's setup.py asks for C++14/C++17.
mmcv-full: $(DET_STAMP)
	rm -rf $(MMCV_SRC) && mkdir -p $(MMCV_SRC)
	$(PIP) download --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d $(MMCV_SRC)
	tar -xzf $(MMCV_SRC)/mmcv-2.1.0.tar.gz -C $(MMCV_SRC)
	sed -i 's/-std=c++1[47]/-std=c++20/g' $(MMCV_SRC)/mmcv-2.1.0/setup.py
	$(PIP) uninstall --quiet --yes mmcv-lite mmcv >/dev/null 2>&1 || true
	cd $(MMCV_SRC)/mmcv-2.1.0 && MMCV_WITH_OPS=1 FORCE_CUDA=0 \
		$(abspath $(PIP)) install --no-build-isolation .
	$(PY) -c 'import mmcv.ops; print("mmcv ops: compiled")'
