"""molml's packages import only downward (see DESIGN.md's layers): checked on the source with
``ast``, so a new import that breaks the layering fails here instead of growing a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "molml"

# rank of each top-level part of molml: a module may import its own part, or parts of lower rank
LAYERS: dict[str, int] = {
    "_version": 0,
    "_lazy": 0,
    "errors": 0,
    "options": 1,
    "chem": 1,
    "tasks": 1,
    "tracking": 1,
    "plots": 1,
    "uncertainty": 1,
    "data": 2,
    "models": 3,
    "callbacks": 3,
    "baselines": 4,
    "predict": 5,
    "training": 6,
    "screen": 7,
    "explain": 7,
    "tune": 7,
    "export": 7,
    "report": 7,
    "quickstart": 8,
    "serve": 8,
    "cli": 9,
    "__main__": 10,  # python -m molml: the command
}


def part_of(module: str) -> str:
    """``molml.data.graphs`` -> ``data``."""
    return module.split(".")[1]


def molml_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every molml import in a file, including imports inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "molml"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "molml":  # `from molml import x`: the facade, or a submodule
                found += [(node.lineno, f"molml.{a.name}") for a in node.names]
            elif node.module.startswith("molml."):
                found.append((node.lineno, node.module))
    return found


def source_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of molml but the top-level facade."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != PACKAGE / "__init__.py":
            dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
            modules[dotted.removesuffix(".__init__")] = path
    return modules


def layering_violations(modules: dict[str, Path]) -> list[str]:
    """Every import of a module that is not from its own part or a lower layer."""
    problems = []
    for module, path in modules.items():
        own = part_of(module)
        if own not in LAYERS:
            problems.append(f"{module}: molml.{own} has no layer in tests/test_layers.py")
            continue
        for line, imported in molml_imports(path):
            if imported.count(".") == 0 or part_of(imported) not in LAYERS:
                problems.append(f"{module}:{line} imports {imported} (not a layered part)")
                continue
            other = part_of(imported)
            if other != own and LAYERS[other] >= LAYERS[own]:
                problems.append(
                    f"{module}:{line} imports {imported}: molml.{other} (layer {LAYERS[other]}) "
                    f"is not below molml.{own} (layer {LAYERS[own]})"
                )
    return problems


def test_every_import_points_down() -> None:
    assert layering_violations(source_modules()) == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("molml.data.bad", "from molml.models.module import MoleculeModel\n"),
        ("molml.models.bad", "def f():\n    import molml.baselines.model\n"),
        ("molml.tune.bad", "def f():\n    import molml.screen.library\n"),
        ("molml.models.bad", "from molml import load_model\n"),
        ("molml.newpart", "from molml.tasks import TASK_TYPES\n"),
    ],
)
def test_upward_sideways_and_unlayered_imports_are_caught(
    module: str, source: str, tmp_path: Path
) -> None:
    """The checker itself flags upward, sideways, facade and unlayered imports."""
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    assert len(layering_violations({module: fake})) == 1


def test_a_downward_import_passes(tmp_path: Path) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text("from molml.data.graphs import GraphStore\nfrom molml.predict import base\n")
    assert layering_violations({"molml.screen.fake": fake}) == []
