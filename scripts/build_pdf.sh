#!/usr/bin/env bash
# Build the whole book as one PDF: _build/pdf/tinytrans.pdf
#
#   scripts/build_pdf.sh                       build (the TeX tools must be installed)
#   scripts/build_pdf.sh --install-deps        first apt-get install them (root or passwordless sudo)
#   scripts/build_pdf.sh --install-deps-only   install them, build nothing
#   scripts/build_pdf.sh --check               exit 0 when every tool is there, 1 otherwise
#
# Jupyter Book's `pdflatex` builder writes LaTeX and runs latexmk with XeLaTeX (the engine
# sphinx-jupyterbook-latex imposes). Chapters are executed through the same jupyter-cache as
# `make book`, so after `make book` nothing runs twice; TINYTRANS_STATIC_WIDGETS=1 keeps the
# cached outputs identical to the HTML build's. `make book` runs it after the HTML, and
# tests/test_book_pages.py checks that the PDF holds every figure (pdfimages, poppler-utils).
#
# Debian/Ubuntu packages it needs (about 700 MB to download, 2 GB on disk; the big one is
# texlive-fonts-extra, for bbm.sty, which the Jupyter Book LaTeX class loads):
#   texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended
#   texlive-fonts-extra texlive-xetex latexmk xindy fonts-freefont-otf fonts-dejavu-core
#   imagemagick libmagickcore-6.q16-6-extra gsfonts
# xindy builds the index; FreeSerif/FreeSans/FreeMono are Sphinx's XeLaTeX fonts;
# ImageMagick with its SVG coder and the URW fonts converts SVG images (the Colab/Kaggle
# badges) to PNG.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended
  texlive-fonts-extra texlive-xetex latexmk xindy fonts-freefont-otf fonts-dejavu-core
  imagemagick libmagickcore-6.q16-6-extra gsfonts poppler-utils
)

missing_tools() {
  local missing=()
  for tool in xelatex latexmk xindy kpsewhich convert pdfimages; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if command -v kpsewhich >/dev/null && [[ -z "$(kpsewhich bbm.sty)" ]]; then missing+=("bbm.sty"); fi
  if ! command -v fc-list >/dev/null || [[ -z "$(fc-list FreeSerif)" ]]; then missing+=("FreeSerif"); fi
  echo "${missing[*]}"
}

if [[ "${1:-}" == "--check" ]]; then
  [[ -z "$(missing_tools)" ]]
  exit
fi

if [[ "${1:-}" == "--install-deps" || "${1:-}" == "--install-deps-only" ]]; then
  if [[ "$(id -u)" != 0 ]] && ! sudo -n true 2>/dev/null; then
    echo "build_pdf.sh: installing the TeX tools needs root or passwordless sudo. Run:" >&2
    echo "  sudo apt-get install --no-install-recommends ${PACKAGES[*]}" >&2
    echo "or build the HTML pages alone with: make html" >&2
    exit 1
  fi
  if [[ "$(id -u)" == 0 ]]; then SUDO=(); else SUDO=(sudo -n); fi
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
  [[ "$1" == "--install-deps-only" ]] && exit 0
  shift
fi

missing="$(missing_tools)"
if [[ -n "$missing" ]]; then
  echo "build_pdf.sh: missing $missing. Install them with:" >&2
  echo "  sudo apt-get install --no-install-recommends ${PACKAGES[*]}" >&2
  echo "or run: scripts/build_pdf.sh --install-deps" >&2
  exit 1
fi

if [[ -n "${JUPYTER_BOOK:-}" ]]; then
  JB="$JUPYTER_BOOK"
elif [[ -x .venv/bin/jupyter-book ]]; then
  JB=.venv/bin/jupyter-book
else
  JB=jupyter-book
fi

start=$SECONDS
rm -rf _build/latex
# No MPLBACKEND: with it set, the kernels never show a figure (see the Makefile).
TINYTRANS_STATIC_WIDGETS=1 env -u MPLBACKEND "$JB" build . --builder pdflatex "$@"

# The file is named after latex.latex_documents.targetname in _config.yml (Sphinx's
# "projectnamenotset" when unset): take whichever PDF latexmk wrote.
shopt -s nullglob
pdfs=(_build/latex/*.pdf)
if ((${#pdfs[@]} != 1)); then
  echo "build_pdf.sh: expected one PDF in _build/latex, found ${#pdfs[@]}" >&2
  exit 1
fi
mkdir -p _build/pdf
cp "${pdfs[0]}" _build/pdf/tinytrans.pdf
echo "The PDF is in _build/pdf/tinytrans.pdf ($(du -h _build/pdf/tinytrans.pdf | cut -f1), $((SECONDS - start)) s)"
