"""The floors: imports only go down (application → hardware_sims → exporters → lorsp_neuro).

Every import statement of every module is read with ``ast``, including the ones inside functions
(the lazy imports that keep ``lorsp --help`` fast are imports all the same), so an upward import
anywhere fails here with the file, the line and the two floors.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Package → floor; a module may import its own floor and the ones below it.
FLOORS = {"lorsp_neuro": 0, "exporters": 1, "hardware_sims": 2, "lorsp_app": 3}
#: Modules that run in the Lava environment (Python 3.10, numpy < 2, no torch).
TORCH_FREE = (
    "lorsp_neuro/errors.py",
    "lorsp_neuro/io.py",
    "exporters/semantics.py",
    "exporters/graph_rules.py",
    "exporters/validate.py",
    "hardware_sims/worker_protocol.py",
    "hardware_sims/worker.py",
    "hardware_sims/lava_backend.py",
)


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(package: str) -> list[str]:
    floor = FLOORS[package]
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, target in imported_packages(tree):
            if target == "benchmarks" or FLOORS.get(target, -1) > floor:
                problems.append(
                    f"{path.relative_to(ROOT)}:{line}: {package} (floor {floor}) imports "
                    f"{target} (floor {FLOORS.get(target, 'benchmarks')})"
                )
    return problems


@pytest.mark.parametrize("package", sorted(FLOORS, key=FLOORS.get))
def test_imports_only_go_down(package):
    assert upward_imports(package) == []


def test_the_check_sees_lazy_upward_imports(tmp_path):
    tree = ast.parse("def handler():\n    from hardware_sims.cosim import cosimulate\n")
    assert imported_packages(tree) == [(2, "hardware_sims")]


def test_every_package_is_on_a_floor():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"benchmarks", "tests", "notebooks"} <= set(FLOORS)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_lava_side_modules_do_not_import_torch(module):
    tree = ast.parse((ROOT / module).read_text())
    assert "torch" not in {name for _, name in imported_packages(tree)}


def test_hw_profiles_json_does_not_import_torch(tmp_path):
    """The cost tables are numpy only; listing them must not pay torch's import time."""
    out = tmp_path / "profiles.json"
    script = (
        "import sys\nfrom lorsp_app.cli import main\n"
        f"code = main(['hw-profiles', '--json', {str(out)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "loihi" in out.read_text()
