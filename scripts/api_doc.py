"""Write ``book/api.md``, the API reference, from each module's ``__all__``.

    python scripts/api_doc.py            # rewrite book/api.md
    python scripts/api_doc.py --check    # exit 1 if book/api.md is not what this writes

Each section documents the names in its module's ``__all__`` (submodules left out) with an
``automodule`` directive; autodoc takes the text from the docstrings. ``__all__`` is read from
the source (``ast``), so this needs neither torch nor an import of the package.
``tests/test_api.py`` checks that the committed page is this script's output.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinytrans"
API_MD = ROOT / "book" / "api.md"

#: (module, section title after the module name), in the page's order.
SECTIONS = (
    ("tinytrans.config", "(chapter 1)"),
    ("tinytrans.model", "(chapter 1)"),
    ("tinytrans.tokenizers", "(chapter 2)"),
    ("tinytrans.data", "(chapter 2)"),
    ("tinytrans.train", "(chapters 3 and 7)"),
    ("tinytrans.checkpoint", "(chapter 3)"),
    ("tinytrans.evaluate", "(chapters 3 and 7)"),
    ("tinytrans.pretrained", "(chapters 3 and 4)"),
    ("tinytrans.generate", "(chapter 4)"),
    ("tinytrans.sizing", "(chapter 5)"),
    ("tinytrans.precision", "(chapters 3 and 5)"),
    ("tinytrans.widgets", ""),
    ("tinytrans.interop", ""),
    ("tinytrans.env", ""),
    ("tinytrans.files", ""),
)

INTRO = """\
# API reference

The package mirrors the chapters: a concept taught in chapter *N* has its code in the module
listed with it. Everything a chapter calls is documented here, generated from the docstrings.

`import tinytrans` also gives these names at the top level, imported on first use (so that
`import tinytrans` alone does not import torch): {names}.
"""

HEADER = "% Written by scripts/api_doc.py from each module's __all__; do not edit by hand.\n"


def source_path(module: str) -> Path:
    """The file of ``module`` (``tinytrans.widgets`` -> ``tinytrans/widgets/__init__.py``)."""
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"


def module_all(module: str) -> list[str]:
    """``module.__all__``, read from its source without importing it."""
    tree = ast.parse(source_path(module).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                return list(ast.literal_eval(node.value))
    raise ValueError(f"{module} has no __all__; add one listing its public names")


def reexported(module: str) -> set[str]:
    """Names ``module`` imports from another module that has its own section (documented
    there, once: ``tinytrans.model`` re-exports ``tinytrans.config``'s ``ModelConfig``)."""
    tree = ast.parse(source_path(module).read_text(encoding="utf-8"))
    sections = {name for name, _ in SECTIONS} - {module}
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module in sections
        for alias in node.names
    }


def documented(module: str) -> list[str]:
    """The names of ``module.__all__`` that the page documents: all but submodules and names
    another section documents."""
    package = ROOT.joinpath(*module.split("."))
    skip = reexported(module)
    return [
        name
        for name in module_all(module)
        if name not in skip
        and not (package / f"{name}.py").exists()
        and not (package / name / "__init__.py").exists()
    ]


def render() -> str:
    """The text of ``book/api.md``."""
    names = ", ".join(f"`{name}`" for name in module_all("tinytrans"))
    parts = [HEADER, INTRO.format(names=names)]
    for module, title in SECTIONS:
        heading = f"`{module}` {title}".rstrip()
        members = ", ".join(documented(module))
        parts.append(
            f"\n## {heading}\n\n```{{eval-rst}}\n.. automodule:: {module}\n"
            f"   :members: {members}\n```\n"
        )
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if book/api.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if API_MD.read_text(encoding="utf-8") != text:
            print("book/api.md is stale: run python scripts/api_doc.py", file=sys.stderr)
            return 1
        return 0
    API_MD.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
