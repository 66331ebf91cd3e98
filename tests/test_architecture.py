"""The import direction of docs/ARCHITECTURE.md, checked on the source (ast, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "utkface_core"

FOUNDATION = {"labels", "config", "paths", "limits", "access", "runs", "janitor", "files"}
ORCHESTRATION = {"jobs", "workflow", "worker", "standby", "sweep", "cli", "__main__", "__init__"}
SUBPACKAGES = ("data", "inference", "training", "evaluation")

# Who may import whom: a layer imports the layers listed here and itself, nothing else in the core.
ALLOWED = {
    "foundation": {"foundation"},
    "data": {"foundation", "data"},
    "inference": {"foundation", "data", "inference"},
    "training": {"foundation", "data", "inference", "training"},
    "evaluation": {"foundation", "data", "inference", "evaluation"},
    "orchestration": {"foundation", "data", "inference", "training", "evaluation", "orchestration"},
}


def layer_of(dotted: str) -> str:
    """The layer of a module named ``utkface_core.X`` or ``utkface_core.SUB.X``."""
    parts = dotted.split(".")
    if parts[0] != "utkface_core":
        raise ValueError(f"{dotted} is not in utkface_core")
    if len(parts) == 1:
        return "orchestration"  # the package itself (__version__)
    if parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] in ORCHESTRATION:
        return "orchestration"
    raise ValueError(f"{dotted} has no layer: add it to FOUNDATION or ORCHESTRATION, or move it into a subpackage")


def imports_of(source: str) -> list[tuple[int, str, int]]:
    """Every ``import``/``from`` in ``source``, at any depth: (line, module, relative level)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "utkface_core" or (not module and node.level):
                # `from utkface_core import data, runs` names modules: each is its own import.
                found += [(node.lineno, f"{module}.{alias.name}".lstrip("."), node.level) for alias in node.names]
            else:
                found.append((node.lineno, module, node.level))
    return found


def violations(name: str, source: str) -> list[str]:
    """The import-direction breaks of the core module ``name`` (dotted) with text ``source``."""
    own = layer_of(name)
    problems = []
    for line, module, level in imports_of(source):
        where = f"{name}:{line} imports {module or '.'}"
        if level:
            problems.append(f"{where} relatively; the core uses absolute imports")
            continue
        top = module.split(".")[0]
        if top == "streamlit":
            problems.append(f"{where}; the core never imports streamlit")
        elif top == "utkface_core":
            other = layer_of(".".join(module.split(".")[:3]) if module.count(".") >= 2 else module)
            if other not in ALLOWED[own]:
                problems.append(f"{where}: layer {own} may not import layer {other}")
    return problems


def core_modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        found.append((".".join(parts), path))
    return found


def test_every_core_module_has_a_layer():
    for name, _ in core_modules():
        layer_of(name)  # raises with the module's name when a new module has no layer


def test_the_core_follows_the_import_direction():
    problems = [p for name, path in core_modules() for p in violations(name, path.read_text())]
    assert problems == []


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("utkface_core.data.dataset", "from utkface_core.training import model\n", "layer data may not import"),
        ("utkface_core.training.trainer", "from utkface_core.evaluation.evaluation import x\n", "may not import"),
        ("utkface_core.evaluation.evalcharts", "import utkface_core.training.charts\n", "may not import"),
        ("utkface_core.runs", "from utkface_core import jobs\n", "layer foundation may not import"),
        ("utkface_core.inference.prediction", "def f():\n    import streamlit\n", "never imports streamlit"),
        ("utkface_core.data.demo", "from . import paths\n", "relatively"),
    ],
)
def test_a_wrong_import_is_reported(name, source, expected):
    problems = violations(name, source)
    assert len(problems) == 1 and expected in problems[0]


def test_allowed_imports_pass():
    source = "from utkface_core import labels\nfrom utkface_core.data import dataset\nimport numpy\n"
    assert violations("utkface_core.inference.prediction", source) == []


def test_a_module_outside_the_core_has_no_layer():
    with pytest.raises(ValueError, match="not in utkface_core"):
        layer_of("pages.train")
