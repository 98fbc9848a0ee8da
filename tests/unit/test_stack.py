"""The CLI as a user meets it without a server."""
from __future__ import annotations

import subprocess
import sys


def test_cli_analyze_against_no_server_is_a_clear_error(clip):
    from toneserve.triton import free_port

    done = subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", str(clip),
                           "--address", f"127.0.0.1:{free_port()}", "--timeout", "5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach the toneserve gateway" in done.stderr and "Traceback" not in done.stderr
