"""The library (htr_utils/*.py) stands alone: it imports only torch, numpy, scipy, never the study."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "htr_utils"
LIBRARY_MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
ALLOWED_ROOTS = {"torch", "numpy", "scipy", "htr_utils", "__future__"}


def test_library_imports_with_the_study_and_its_dependencies_blocked():
    """Import every library module in a fresh interpreter where the study package and the study extra's
    dependencies raise ImportError."""
    blocked = ["htr_utils.study", "pandas", "matplotlib", "seaborn", "torchvision", "sklearn", "papermill", "tqdm"]
    code = "\n".join([
        "import sys",
        f"for name in {blocked!r}: sys.modules[name] = None",
        *[f"import htr_utils.{m}" for m in LIBRARY_MODULES],
        "from htr_utils import hvp_operator, lanczos, slq_density, top_eigenvalues, hutchinson_trace, "
        "trace_penalty, spectral_distance, layer_groups",
        "print('ok')",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_library_sources_name_only_allowed_imports():
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must stay inside the library
                    assert not (node.module or "").startswith("study"), f"{path.name} imports the study"
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            stdlib = {r for r in roots if r in sys.stdlib_module_names}
            assert roots - stdlib <= ALLOWED_ROOTS, f"{path.name} imports {roots - stdlib - ALLOWED_ROOTS}"
            assert "htr_utils.study" not in ast.unparse(node), f"{path.name} imports the study"
