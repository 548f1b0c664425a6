"""Layers only import downward: every ``overlapseg`` import of every module (read with ``ast``,
function-level imports included) is checked against a table of allowed dependencies, and every
module of ``models/`` and ``gan/`` imports without pulling in ``overlapseg.train``."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import overlapseg

ROOT = Path(overlapseg.__file__).parent

# unit -> units it may import (besides itself); top-level modules are units of their own
_BELOW = ["utils", "data", "maps", "synth", "models", "gan", "train", "evaluate"]
ALLOWED = {unit: set(_BELOW[:i]) for i, unit in enumerate(_BELOW)}
ALLOWED["report"] = set(_BELOW)
ALLOWED["provenance"] = set(_BELOW) | {"report"}  # table provenance rebuilds the tables
ALLOWED["verify"] = set(_BELOW) | {"report", "provenance"}
ALLOWED["study"] = set(_BELOW) | {"report", "provenance"}  # the workflow's view of everything below
ALLOWED["segment"] = set(_BELOW) | {"report", "provenance"}  # applies trained models, writes lab formats
ALLOWED["cli"] = set(ALLOWED) | {"report", "provenance", "verify", "study", "segment"}  # sees all
ALLOWED["__init__"] = set()

# Known upward imports awaiting a fix (none today); a fixed one listed here fails the test.
KNOWN_LEAKS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def overlapseg_imports(path: Path) -> set[str]:
    """Units of ``overlapseg`` that ``path`` imports, at any depth of the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "overlapseg" else \
                [f"overlapseg.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {unit_of(n) for n in names if n.startswith("overlapseg.")}
    return found


def violations() -> set[tuple[str, str]]:
    out = set()
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path)
        unit = unit_of(module)
        for target in overlapseg_imports(path) - {unit}:
            if target not in ALLOWED.get(unit, set()):
                out.add((module, target))
    return out


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in ROOT.rglob("*.py")}
    assert units <= set(ALLOWED), f"add {sorted(units - set(ALLOWED))} to ALLOWED"


def test_imports_only_go_downward():
    found = violations()
    new = sorted(found - KNOWN_LEAKS)
    assert not new, "upward imports (module, imported unit): " + ", ".join(map(str, new))
    fixed = sorted(KNOWN_LEAKS - found)
    assert not fixed, f"fixed leaks still listed in KNOWN_LEAKS: {fixed}; delete them"


def test_models_never_import_train_and_utils_never_import_data():
    """The two rules stated in the working notes, kept strict (no exceptions) for models/."""
    found = violations()
    assert not [m for m, t in found if m.startswith("overlapseg.models") and t == "train"]
    assert not [m for m, t in found if m.startswith("overlapseg.utils")
                and t == "data" and (m, t) not in KNOWN_LEAKS]


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]


@pytest.mark.parametrize("package", ["overlapseg.models", "overlapseg.gan"])
def test_modules_import_without_the_training_layer(package):
    """In a fresh interpreter (this one has imported train/ already): importing every module
    of the package loads no ``overlapseg.train`` module."""
    code = (f"import importlib, sys\n"
            f"for m in {_modules(package)!r}: importlib.import_module(m)\n"
            f"print(sorted(k for k in sys.modules if k.startswith('overlapseg.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT.parent), "OMP_NUM_THREADS": "1",
                              "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout


def test_config_adapter_check_lives_in_data():
    """What utils/config.py imported from data/ is offered by data/ for the config owner to call."""
    from overlapseg.data.adapters import check_config_adapter_options

    check_config_adapter_options({"datasets": {"demo": {"format": "isbi2014", "options": {}}}})
    with pytest.raises(ValueError, match=r"config: datasets\.demo\.options: unknown option\(s\) 'skip_emtpy'"):
        check_config_adapter_options({"datasets": {"demo": {"format": "isbi2014",
                                                            "options": {"skip_emtpy": True}}}})
