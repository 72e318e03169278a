"""The package is a stack of layers (pyproject.toml [tool.importlinter], drawn in docs/architecture.md).

cli > workflows > monitoring | surveillance > scoring > evaluation > models > features > data > tracking > helpers:
an import that points up (say, a reader importing a model) breaks the layers contract and fails here, naming the chain
of imports; `make lint` runs the same check. Imports inside functions hide such arrows from a reader, so each one says
why it is there.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "omics_risk"
#: Entry points: their lazy imports keep ``--help`` and the argument checks fast, so they also say why.
ENTRY_POINTS = (ROOT / "train.py", ROOT / "evaluate.py")


def test_import_contracts_are_kept() -> None:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def function_imports_without_reason(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line`` of each import inside a function body with no comment on its line or the line above."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for fn in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                here = lines[node.lineno - 1]
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                if "#" not in here and not above.startswith("#"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {here.strip()}")
    return found


def test_imports_inside_functions_say_why() -> None:
    files = sorted(PACKAGE.rglob("*.py")) + list(ENTRY_POINTS)
    unexplained = [hit for path in files for hit in function_imports_without_reason(path)]
    assert not unexplained, (
        f"{len(unexplained)} import(s) inside functions without a comment saying why (optional dependency, start-up "
        "time); move them to the top of the module or add the reason:\n" + "\n".join(unexplained)
    )


def test_the_rule_catches_an_unexplained_import(tmp_path: Path) -> None:
    mod = tmp_path / "mod.py"
    mod.write_text("import os\n\n\ndef f():\n    import json\n    return json\n\n\n"
                   "def g():\n    import csv  # optional dependency\n    return csv\n\n\n"
                   "def h():\n    # start-up time\n    from pathlib import Path\n    return Path\n")
    assert function_imports_without_reason(mod, tmp_path) == ["mod.py:5: import json"]
