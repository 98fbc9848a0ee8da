"""The playground page ships in the wheel: `--playground` serves gateway/playground/ from the installed package,
which setuptools leaves out unless pyproject.toml names it as package data."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.deploy.test_extras import copy_tree
from tests.support import ROOT


def test_the_wheel_holds_every_playground_file(tmp_path):
    source = copy_tree(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("toneserve-*.whl")
    files = sorted(p for p in (ROOT / "gateway" / "playground").iterdir() if p.is_file())
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in files}
    with zipfile.ZipFile(wheel) as archive:
        for path in files:
            assert archive.read(f"toneserve/gateway/playground/{path.name}") == path.read_bytes(), path.name
