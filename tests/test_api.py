"""The public surface: ``__all__`` in every module, the lazy top level, a torch-free
``import tinytrans`` and ``tinytrans --help``, and ``book/api.md`` generated from ``__all__``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import tinytrans

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import api_doc  # noqa: E402

#: Every public module of the package, found on disk (a new module is covered without a
#: change here; private ``_name`` modules are skipped).
MODULES = tuple(
    sorted(
        name
        for path in (ROOT / "tinytrans").rglob("*.py")
        if not any(
            part.startswith("_") and part != "__init__.py" for part in path.relative_to(ROOT).parts
        )
        and (
            name := ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        )
        != "tinytrans"
    )
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )


@pytest.mark.parametrize("name", MODULES)
def test_star_import_exposes_only_all(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list) and len(set(module.__all__)) == len(module.__all__)
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(module.__all__)
    for key, value in namespace.items():
        assert not key.startswith("_"), f"{name} exports the private {key}"
        if isinstance(value, types.ModuleType):
            assert value.__name__.startswith("tinytrans."), f"{name} exports {value.__name__}"


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_are_this_packages(name: str) -> None:
    module = importlib.import_module(name)
    for key in module.__all__:
        value = getattr(module, key)  # AttributeError names the stale entry
        origin = getattr(value, "__module__", None)
        if isinstance(value, (type, types.FunctionType)):
            assert origin.startswith("tinytrans"), f"{name}.{key} comes from {origin}"


def test_top_level_names_are_the_modules_objects() -> None:
    assert tinytrans.__version__.count(".") == 2  # test_release checks it against every place
    assert sorted(tinytrans.__all__) == sorted(tinytrans._API)
    for key, module_name in tinytrans._API.items():
        module = importlib.import_module(module_name)
        assert key in module.__all__, f"{key} is not public in {module_name}"
        assert getattr(tinytrans, key) is getattr(module, key)
    assert set(tinytrans.__all__) <= set(dir(tinytrans))
    assert {"sizing", "generate", "ModelConfig"} <= set(dir(tinytrans))
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = tinytrans.no_such_name


def test_submodules_are_attributes_and_generate_is_the_module() -> None:
    from tinytrans import generate as G

    assert isinstance(G, types.ModuleType) and tinytrans.generate is G
    assert tinytrans.sizing is importlib.import_module("tinytrans.sizing")


def test_import_tinytrans_does_not_import_torch() -> None:
    result = run_python(
        "import sys, tinytrans; assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'numpy' not in sys.modules, 'numpy imported'"
    )
    assert result.returncode == 0, result.stderr
    # The configuration is torch-free (the CLI builds its flags from it); the network is not.
    result = run_python(
        "import sys, tinytrans; tinytrans.ModelConfig.preset('course'); "
        "assert 'torch' not in sys.modules; tinytrans.TinyTransformer; "
        "assert 'torch' in sys.modules"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["generate", "--help"], ["size", "--help"]]
)
def test_cli_help_does_not_import_torch(argv: list[str]) -> None:
    result = run_python(
        "import sys\nfrom tinytrans.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit:\n    code = exit.code\n"
        "assert code == 0, code\nassert 'torch' not in sys.modules, 'torch imported'\n"
    )
    assert result.returncode == 0, result.stderr
    assert "usage: tinytrans" in result.stdout


def test_cli_precisions_match_training() -> None:
    from tinytrans.cli.train import PRECISIONS
    from tinytrans.precision import TRAINING_PRECISIONS

    assert PRECISIONS == TRAINING_PRECISIONS


def test_api_md_is_generated_from_all() -> None:
    text = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    assert text == api_doc.render(), "book/api.md is stale: run python scripts/api_doc.py"
    for module, _ in api_doc.SECTIONS:
        assert api_doc.module_all(module) == importlib.import_module(module).__all__
        assert f".. automodule:: {module}\n" in text


def test_api_md_covers_the_chapter_modules() -> None:
    sections = {module for module, _ in api_doc.SECTIONS}
    assert {m for m in MODULES if m.count(".") == 1} - sections == {"tinytrans.cli"}
