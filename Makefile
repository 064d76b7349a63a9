# Set-up is part of each target: a fresh machine needs only Python 3.11 and make.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.saal_tasks_installed

.PHONY: setup demo test

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

test: $(STAMP)
	$(PY) -m pytest
