"""The SDK never sends an API key in plaintext beyond this machine unless told to on purpose."""
from __future__ import annotations

import subprocess
import sys

import pytest

from toneserve.client.connection import ENV_ALLOW_PLAINTEXT_KEY, ENV_API_KEY, Connection, is_local

KEY = "Zt7q-8mXo2Lw1bV9cR4yPn6Ks3Ud0Hj5"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("TONESERVE_ADDRESS", ENV_API_KEY, "TONESERVE_CA_CERT", ENV_ALLOW_PLAINTEXT_KEY):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1:50051", True), ("localhost:50051", True), ("[::1]:50051", True), ("ipv4:127.0.0.2:1", True),
    ("dns:///127.0.0.1:50051", True), ("unix:/run/toneserve.sock", True),
    ("10.0.0.7:50051", False), ("gateway.example:443", False), ("dns:///gateway.example:443", False),
    ("[2001:db8::1]:50051", False), ("0.0.0.0:50051", False), ("localhost.example:1", False)])
def test_what_counts_as_this_machine(address, local):
    assert is_local(address) is local


def test_a_key_in_plaintext_to_the_network_is_refused(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="refusing to send the API key in plaintext to 10.0.0.7:50051"):
        Connection.resolve("10.0.0.7:50051", KEY)
    monkeypatch.setenv(ENV_API_KEY, KEY)  # from the environment too
    with pytest.raises(ValueError, match="plaintext"):
        Connection.resolve("gateway.example:50051")


def test_what_may_go():
    assert Connection.resolve("127.0.0.1:50051", KEY).api_key == KEY      # this machine
    assert Connection.resolve("10.0.0.7:50051").api_key is None           # no key to leak
    assert Connection.resolve("10.0.0.7:50051", KEY, tls=True).tls        # TLS
    assert Connection.resolve("10.0.0.7:50051", KEY, allow_plaintext_key=True).api_key == KEY  # on purpose


def test_the_environment_can_allow_it(monkeypatch):
    monkeypatch.setenv(ENV_ALLOW_PLAINTEXT_KEY, "1")
    assert Connection.resolve("10.0.0.7:50051", KEY).api_key == KEY
    with pytest.raises(ValueError):  # an explicit False wins over the environment
        Connection.resolve("10.0.0.7:50051", KEY, allow_plaintext_key=False)
    monkeypatch.setenv(ENV_ALLOW_PLAINTEXT_KEY, "0")
    with pytest.raises(ValueError):
        Connection.resolve("10.0.0.7:50051", KEY)


def test_the_client_and_the_command_refuse():
    from toneserve.client.sdk import AsyncClient, Client

    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError, match="plaintext"):
            cls("10.0.0.7:50051", api_key=KEY)
    Client("10.0.0.7:50051", api_key=KEY, allow_plaintext_key=True).close()
    result = subprocess.run([sys.executable, "-m", "toneserve.cli", "analyze", "--address", "10.0.0.7:50051",
                             "--api-key", KEY, __file__], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "refusing to send the API key in plaintext" in result.stderr, result.stderr
    assert KEY not in result.stderr + result.stdout
