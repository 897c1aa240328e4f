"""Structural checks: one-way imports between layers, and a cheap `import softsym`."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "softsym"

# lower rank = lower layer; a module may import only modules of the same or a lower rank
RANK = {
    "errors": 0, "defaults": 0, "parallel": 0,
    "groups": 1,
    "reps": 2, "data": 2,
    "soft": 3, "metrics": 3,
    "nn": 4, "wrappers": 4,
    "models": 5, "train": 5, "check": 5,
    "report": 6, "bench": 6,
    "cli": 7,
    "__init__": 8, "__main__": 8,
}


def _layer(rel: Path) -> str:
    first = rel.parts[0]
    return first[:-3] if first.endswith(".py") else first


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    rel = path.relative_to(SRC)
    package_parts = list(rel.parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # "from .. import x" at the top: x is the layer
                    for alias in node.names:
                        yield alias.name
                else:
                    yield target[0]
            elif node.module and node.module.startswith("softsym"):
                parts = node.module.split(".")
                if len(parts) > 1:
                    yield parts[1]
                else:
                    for alias in node.names:
                        yield alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "softsym" and len(parts) > 1:
                    yield parts[1]


def test_imports_point_one_way():
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        layer = _layer(rel)
        if layer not in RANK:
            violations.append(f"{rel}: layer {layer!r} has no rank in this test; add it")
            continue
        for target in _imports(path):
            target = target[:-3] if target.endswith(".py") else target
            if target in RANK and RANK[target] > RANK[layer]:
                violations.append(f"{rel} ({layer}) imports {target} (a higher layer)")
    assert not violations, "\n".join(violations)


def test_import_softsym_is_cheap():
    """`import softsym` must not pull in scipy or matplotlib, nor solve anything."""
    code = (
        "import sys, torch, softsym;"
        "heavy = [m for m in ('scipy', 'matplotlib', 'softsym.reps.solve') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import softsym loaded heavy modules: {out.stdout.strip()}"


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "softsym", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for command in ("demo", "solve", "cache", "bench"):
        assert command in out.stdout
