"""The package's layers import downwards only, so the functional core has no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import staging_validation

PACKAGE = Path(staging_validation.__file__).parent
# Lower index = lower layer. A module may import its own layer or any layer below it, never above.
LAYERS = [
    {"config_files", "storage", "schemas", "layout"},
    {"simulator", "target"},
    {"probes", "telemetry", "lifecycle", "campaign_target"},
    {"plan", "collection"},
    {"acceptance"},
    {"hour_capture", "final_checks", "watch"},
    {"campaign", "definitions", "cli"},
]


def _layer(top: str) -> int:
    return next(index for index, names in enumerate(LAYERS) if top in names)


def _imported_tops(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("staging_validation."):
            tops.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            tops |= {a.name.split(".")[1] for a in node.names if a.name.startswith("staging_validation.")}
    return tops


def test_every_import_goes_down_a_layer_or_stays_in_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top == "__init__":
            continue
        for imported in _imported_tops(path):
            if _layer(imported) > _layer(top):
                upward.append(f"{path.relative_to(PACKAGE)} imports staging_validation.{imported}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_every_top_level_module_has_a_layer():
    tops = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or p.is_dir()) and p.name not in ("__init__.py", "__pycache__")}
    assert tops <= set().union(*LAYERS), tops - set().union(*LAYERS)
