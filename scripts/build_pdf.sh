#!/usr/bin/env bash
# Build the whole book as one PDF: _build/pdf/tinytrans.pdf
#
#   scripts/build_pdf.sh                  build (the TeX tools must be installed)
#   scripts/build_pdf.sh --install-deps   first apt-get install them (root or passwordless sudo)
#
# Jupyter Book's `pdflatex` builder writes LaTeX and runs latexmk with XeLaTeX (the engine
# sphinx-jupyterbook-latex imposes). Chapters are executed through the same jupyter-cache as
# `make book`, so after `make book` nothing runs twice; TINYTRANS_STATIC_WIDGETS=1 keeps the
# cached outputs identical to the HTML build's. Not part of `make test`.
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
  imagemagick libmagickcore-6.q16-6-extra gsfonts
)

if [[ "${1:-}" == "--install-deps" ]]; then
  if [[ "$(id -u)" == 0 ]]; then SUDO=(); else SUDO=(sudo -n); fi
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
  shift
fi

missing=()
for tool in xelatex latexmk xindy kpsewhich convert; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if command -v kpsewhich >/dev/null && [[ -z "$(kpsewhich bbm.sty)" ]]; then missing+=("bbm.sty"); fi
if command -v fc-list >/dev/null && [[ -z "$(fc-list FreeSerif)" ]]; then missing+=("FreeSerif"); fi
if ((${#missing[@]})); then
  echo "build_pdf.sh: missing ${missing[*]}. Install them with:" >&2
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
TINYTRANS_STATIC_WIDGETS=1 MPLBACKEND=Agg "$JB" build . --builder pdflatex "$@"

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
