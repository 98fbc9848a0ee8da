"""The README's main command, end to end (tiny models so it stays quick)."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import processes_using


def test_demo_exports_serves_analyses_and_stops(models_root, toneserve_home):
    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "demo", "--size", "tiny"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert len(result["segments"]) == 2 and result["metadata"]["audio_seconds"] == 8.0
    assert "RANDOM-WEIGHT" in done.stderr and "everything stopped" in done.stderr
    assert not processes_using(toneserve_home / "repository")
