"""The tier hooks of tests/conftest.py, run on a small suite of their own: every test is marked with its
folder's tier, and the unit tier fails the run when it imports torch, funasr or onnx or starts tritonserver."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite(tmp_path) -> Path:
    """tests/ with its conftest and support module, stand-ins named like the heavy modules (so the real ones
    are never loaded) and a stand-in tritonserver that exits at once."""
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "export").mkdir()
    for name in ("conftest.py", "support.py"):
        shutil.copy(TESTS / name, tmp_path / "tests" / name)
    for package in ("tests", "tests/unit", "tests/export"):
        (tmp_path / package / "__init__.py").touch()
    (tmp_path / "stand-ins").mkdir()
    for heavy in ("onnx", "funasr", "torch"):
        (tmp_path / "stand-ins" / f"{heavy}.py").write_text("LOADED = True\n")
    tritonserver = tmp_path / "bin" / "tritonserver"
    tritonserver.parent.mkdir()
    tritonserver.write_text("#!/bin/sh\nexit 0\n")
    tritonserver.chmod(0o755)
    return tmp_path


def write(path: Path, source: str) -> None:
    path.write_text(textwrap.dedent(source))


def pytest_in(folder: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W",
                           "ignore::pytest.PytestUnknownMarkWarning", *arguments],
                          cwd=folder, env={**os.environ, "PYTHONPATH": str(folder / "stand-ins")},
                          capture_output=True, text=True, timeout=120)


def test_the_unit_tier_fails_on_heavy_imports_and_tritonserver(suite):
    write(suite / "tests" / "unit" / "test_heavy.py", f"""
        import subprocess

        import funasr  # noqa: F401  (while the module is collected)


        def test_imports_onnx():
            import onnx  # noqa: F401


        def test_starts_tritonserver():
            subprocess.run([{str(suite / "bin" / "tritonserver")!r}], check=True)


        def test_light():
            import json  # noqa: F401
    """)
    done = pytest_in(suite, "tests")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "3 passed" in done.stdout  # every test passed: the guard failed the run
    guard = done.stdout[done.stdout.index("unit tier guard"):]
    assert "tests/unit/test_heavy.py imports funasr" in guard
    assert "tests/unit/test_heavy.py::test_imports_onnx imports onnx" in guard
    assert "tests/unit/test_heavy.py::test_starts_tritonserver starts tritonserver" in guard
    assert "test_light" not in guard


def test_other_tiers_may_and_markers_follow_the_folder(suite):
    write(suite / "tests" / "unit" / "test_light.py", """
        def test_light():
            import json  # noqa: F401
    """)
    write(suite / "tests" / "export" / "test_export.py", """
        import torch  # noqa: F401


        def test_exports():
            import onnx  # noqa: F401
    """)
    everything = pytest_in(suite, "tests")
    assert everything.returncode == 0 and "2 passed" in everything.stdout, everything.stdout + everything.stderr
    assert "unit tier guard" not in everything.stdout
    selected = pytest_in(suite, "-m", "unit", "--collect-only", "-q", "tests")
    assert selected.returncode == 0, selected.stdout + selected.stderr
    assert "tests/unit/test_light.py::test_light" in selected.stdout and "test_export" not in selected.stdout
    assert "1/2 tests collected (1 deselected)" in selected.stdout


def test_a_test_outside_a_tier_folder_is_refused(suite):
    write(suite / "tests" / "test_stray.py", """
        def test_stray():
            pass
    """)
    done = pytest_in(suite, "tests")
    assert done.returncode != 0 and "tests outside a tier folder" in done.stdout + done.stderr
