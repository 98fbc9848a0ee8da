"""The direction of dependencies between the parts (docs/architecture.md), read from the source.

Every `import toneserve...` / `from toneserve... import` of a part, at any depth (lazy imports
included), must name the part itself or one it may depend on.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

CORE = {"toneserve.contract", "toneserve.v1", "toneserve.console", "toneserve.paths"}
# part -> the toneserve packages and modules it may import (besides itself and the core).
ALLOWED = {
    "client": set(),
    "gateway": set(),
    "model_repository": {"toneserve.samples", "toneserve.triton"},
    "export": {"toneserve.samples", "toneserve.model_repository.runners"},
    "loadtest": {"toneserve.samples", "toneserve.triton", "toneserve.gateway", "toneserve.model_repository",
                 "toneserve.export", "toneserve.kube"},
    # The Kubernetes renderer reads the gateway's settings and the catalog; the gateway never imports it.
    "kube": {"toneserve.gateway.settings", "toneserve.model_repository"},
}


def imported_modules(path: Path) -> set[str]:
    """Every toneserve module `path` imports; `from toneserve import x` counts as toneserve.x."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "toneserve":
                names |= {f"toneserve.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
    return {name for name in names if name == "toneserve" or name.startswith("toneserve.")}


def allowed(part: str, module: str) -> bool:
    if module == "toneserve":  # the core package itself (its __init__ is empty)
        return True
    prefixes = {f"toneserve.{part}"} | CORE | ALLOWED[part]
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(part):
    files = sorted((ROOT / part).rglob("*.py"))
    assert files, f"no sources under {part}/"
    wrong = {f"{path.relative_to(ROOT)}: {module}" for path in files for module in imported_modules(path)
             if not allowed(part, module)}
    assert not wrong, f"{part}/ imports what it must not:\n" + "\n".join(sorted(wrong))


def test_the_contract_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "toneserve" / "contract.py").read_text())
    imported = {alias.name.partition(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.partition(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "enum"}, imported


def test_the_check_catches_a_forbidden_import(tmp_path):
    """The scan sees a lazy import inside a function, and `from toneserve import export`."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from toneserve import export\n    import toneserve.loadtest.plan\n")
    found = imported_modules(source)
    assert found == {"toneserve.export", "toneserve.loadtest.plan"}
    assert not any(allowed("gateway", module) for module in found)


def test_each_part_folder_is_its_package():
    for part in ALLOWED:
        link = ROOT / "toneserve" / part
        assert link.is_symlink() and link.resolve() == (ROOT / part).resolve(), link
