"""`toneserve analyze` without a server: usage errors and a server that is not there are clear errors."""
from __future__ import annotations

import pytest

from tests.support import toneserve_analyze
from toneserve.triton import free_port


def test_a_stopped_server_is_a_clear_error_not_a_traceback(folder):
    address = f"127.0.0.1:{free_port()}"
    done = toneserve_analyze("calls/stereo16.wav", "calls/mono16.mp3", "--address", address, "--timeout", "10",
                             cwd=folder)
    assert done.returncode == 1
    assert f"cannot reach the toneserve gateway at {address}" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert "calls/stereo16.wav: UNAVAILABLE" in done.stderr and "calls/mono16.mp3" in done.stderr


@pytest.mark.parametrize("arguments", [["calls", "--format", "xml"], ["calls", "--jobs", "0"], []])
def test_usage_errors_exit_2(folder, arguments):
    done = toneserve_analyze(*arguments, cwd=folder)
    assert done.returncode == 2 and "usage:" in done.stderr and "Traceback" not in done.stderr


def test_an_unreadable_ca_certificate_exits_2(folder):
    done = toneserve_analyze("calls", "--ca-cert", "no-such.pem", cwd=folder)
    assert done.returncode == 2 and "cannot read the CA certificate no-such.pem" in done.stderr
