"""API keys: the key text's format and checks, digests, the constant-time comparison, per-tenant
policies, reloading, and the refusal to serve the network without keys."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
import sys

import pytest

from toneserve.contract import Code, ToneserveError
from toneserve.gateway import auth
from toneserve.gateway.auth import ANONYMOUS, ApiKeys, KeyFileError, TenantPolicy, check_key, parse_keys, read_keys

ACME = "Zt7q-8mXo2Lw1bV9cR4yPn6Ks3Ud0Hj5"    # 32 characters of four classes: ~ 200 bits
GLOBEX = "3f9a0c6e1b7d42a8e5f01c9b6d3a7e2f"  # 32 hex digits: 128 bits
GLOBEX_DIGEST = hashlib.sha256(GLOBEX.encode()).hexdigest()


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_keys_are_kept_as_digests_only():
    table = parse_keys(f"{ACME} acme\n")
    assert table.digests == ((hashlib.sha256(ACME.encode()).digest(), "acme"),)
    assert ACME not in repr(table) and ACME.encode() not in repr(table).encode()


def test_a_tenant_is_found_by_its_key_or_its_digest():
    keys = ApiKeys(parse_keys(f"# comment\n{ACME} acme   # trailing comment\n\nsha256:{GLOBEX_DIGEST.upper()} globex\n"))
    assert keys.tenant(bearer(ACME)) == "acme"
    assert keys.tenant(bearer(GLOBEX)) == "globex"
    assert keys.tenant([("authorization", f"bearer  {ACME} ")]) == "acme"  # scheme case and spaces
    assert keys.tenants == {"acme", "globex"}
    for metadata in (None, [], bearer(ACME[:-1]), bearer(GLOBEX_DIGEST), [("authorization", ACME)],
                     [("authorization", f"Basic {ACME}")], bearer("é" * 40)):
        with pytest.raises(ToneserveError) as error:
            keys.tenant(metadata)
        assert error.value.code == Code.UNAUTHENTICATED


def test_without_keys_every_request_is_the_anonymous_tenant():
    keys = ApiKeys()
    assert not keys.enabled and keys.tenant(None) == ANONYMOUS and keys.tenant(bearer("anything")) == ANONYMOUS
    assert keys.policy(ANONYMOUS) == TenantPolicy()


def test_the_comparison_is_constant_time_on_bytes_against_every_key(monkeypatch):
    """Every known digest is compared with hmac.compare_digest, as bytes, even after a match."""
    calls = []
    compare = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return compare(a, b)

    keys = ApiKeys(parse_keys(f"{ACME} acme\n{GLOBEX} globex\n"))
    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert keys.tenant(bearer(ACME)) == "acme"  # the first key matches; the second is compared all the same
    assert calls == [(bytes, bytes)] * 2
    calls.clear()
    with pytest.raises(ToneserveError):
        keys.tenant(bearer("x" * 40))
    assert len(calls) == 2


def test_policies_come_from_the_key_lines():
    keys = ApiKeys(parse_keys(f"{ACME} acme weight=3 seconds_per_minute=120\n"
                              f"sha256:{GLOBEX_DIGEST} acme seconds_per_day=3600\n"
                              "sha256:" + "0" * 64 + " initech\n"))
    assert keys.policy("acme") == TenantPolicy(weight=3.0, audio_seconds_per_minute=120.0,
                                               audio_seconds_per_day=3600.0)
    assert keys.policy("initech") == TenantPolicy() and keys.policy("unlisted") == TenantPolicy()
    with pytest.raises(AttributeError):
        keys.policy("acme").weight = 2  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("text, words", [
    ("", "no keys"),
    ("# only a comment\n", "no keys"),
    (f"{ACME}\n", "expected `KEY TENANT"),
    (f"{ACME} a\n{ACME} b\n", "twice"),
    (f"{GLOBEX} a\nsha256:{GLOBEX_DIGEST} b\n", "twice"),
    ("k-acme-123 acme\n", "too weak"),
    ("a" * 64 + " acme\n", "too weak"),             # long, but one character
    ("0123456789" * 3 + " acme\n", "too weak"),      # 30 digits: about 100 bits
    ("Zt7q-8mXo2Lw1bV9cR4yPn6Ks3Ud0Hé5 acme\n", "printable ASCII"),
    ("sha256:abc acme\n", "64 hex digits"),
    ("sha256:" + "g" * 64 + " acme\n", "64 hex digits"),
    (f"{ACME} acme colour=red\n", "unknown option 'colour'"),
    (f"{ACME} acme weight\n", "unknown option 'weight'"),
    (f"{ACME} acme {GLOBEX}\n", "unknown option"),  # a second key pasted on the line
    (f"{ACME} acme weight=heavy\n", "must be a number"),
    (f"{ACME} acme weight=0\n", "positive"),
    (f"{ACME} acme seconds_per_day=-1\n", "positive"),
    (f"{ACME} acme seconds_per_day=nan\n", "positive"),
    (f"{ACME} acme weight=1\n{GLOBEX} acme weight=2\n", "two different values of weight"),
])
def test_key_text_mistakes_are_clear_and_never_quote_the_key(text, words):
    with pytest.raises(KeyFileError, match=words) as error:
        parse_keys(text, "keys.txt")
    assert ACME not in str(error.value) and GLOBEX not in str(error.value)
    if text.strip() and not text.startswith("#"):
        assert "keys.txt:" in str(error.value), "the line is named"


def test_strong_generated_keys_pass():
    import secrets

    for _ in range(20):
        assert check_key(secrets.token_urlsafe(32)) is None
        assert check_key(secrets.token_hex(16)) is None
    assert check_key(secrets.token_hex(15)) is not None  # 120 bits


def test_key_files_and_the_environment(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"{ACME} acme\n")
    assert read_keys(path).tenants == {"acme"}
    with pytest.raises(KeyFileError, match="cannot read"):
        read_keys(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"\xe9" * 40 + b" acme\n")
    with pytest.raises(KeyFileError, match="not ASCII"):
        read_keys(tmp_path / "latin1.txt")

    assert not ApiKeys.load(None, {}).enabled
    from_flag = ApiKeys.load(path, {auth.ENV_KEYS: f"{GLOBEX} globex"})
    assert from_flag.tenants == {"acme"} and from_flag.path == path
    from_file_env = ApiKeys.load(None, {auth.ENV_KEYS_FILE: str(path)})
    assert from_file_env.tenants == {"acme"} and from_file_env.path == path
    from_text_env = ApiKeys.load(None, {auth.ENV_KEYS: f"{GLOBEX} globex weight=2"})
    assert from_text_env.tenant(bearer(GLOBEX)) == "globex" and from_text_env.policy("globex").weight == 2
    with pytest.raises(KeyFileError, match="both"):
        ApiKeys.load(None, {auth.ENV_KEYS: f"{GLOBEX} globex", auth.ENV_KEYS_FILE: str(path)})
    with pytest.raises(KeyFileError, match=f"{auth.ENV_KEYS}:1: .*too weak"):
        ApiKeys.load(None, {auth.ENV_KEYS: "short globex"})


def test_reload_swaps_the_keys_and_a_bad_file_keeps_the_old_ones(tmp_path, caplog):
    path = tmp_path / "keys.txt"
    path.write_text(f"{ACME} acme\n")
    keys = ApiKeys.load(path, {})
    assert keys.tenant(bearer(ACME)) == "acme"

    path.write_text(f"{GLOBEX} globex weight=2\n")
    assert keys.reload()
    assert keys.tenant(bearer(GLOBEX)) == "globex" and keys.policy("globex").weight == 2
    with pytest.raises(ToneserveError):
        keys.tenant(bearer(ACME))  # the removed key stops working

    for bad in ("weak globex\n", ""):
        path.write_text(bad)
        with caplog.at_level(logging.ERROR, "toneserve.gateway"):
            assert not keys.reload()
        assert "previous keys stay in use" in caplog.text
        assert keys.tenant(bearer(GLOBEX)) == "globex"
    path.unlink()
    assert not keys.reload() and keys.tenant(bearer(GLOBEX)) == "globex"

    env_keys = ApiKeys.load(None, {auth.ENV_KEYS: f"{ACME} acme"})
    assert not env_keys.reload() and env_keys.tenant(bearer(ACME)) == "acme"


# --------------------------------------------------------------------------- exposure

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("gateway.example", False)])
def test_loopback_addresses(host, loopback):
    from toneserve.gateway.server import is_loopback

    assert is_loopback(host) is loopback


def test_the_gateway_refuses_the_network_without_keys():
    from toneserve.gateway.server import Gateway, GatewayStartError

    for host in ("0.0.0.0", "::", "192.168.1.10"):
        with pytest.raises(GatewayStartError, match=f"refusing to listen on {host} without API keys"):
            Gateway("127.0.0.1:8001", host=host)
        assert Gateway("127.0.0.1:8001", host=host, allow_unauthenticated=True).host == host
        assert Gateway("127.0.0.1:8001", host=host, keys=ApiKeys(parse_keys(f"{ACME} acme"))).host == host
    assert Gateway("127.0.0.1:8001").host == "127.0.0.1"  # the quick start: loopback needs no keys


def test_metrics_are_on_loopback_unless_told():
    from toneserve.cli import parser
    from toneserve.gateway.server import Gateway

    gateway = Gateway("127.0.0.1:8001", host="0.0.0.0", allow_unauthenticated=True, metrics_port=9464)
    assert gateway.metrics_host == "127.0.0.1"
    for command in ("serve", "gateway"):
        args = parser().parse_args([command, "--host", "0.0.0.0"])
        assert args.metrics_host == "127.0.0.1" and args.allow_unauthenticated is False and args.api_keys is None
        args = parser().parse_args([command, "--metrics-host", "0.0.0.0", "--allow-unauthenticated"])
        assert args.metrics_host == "0.0.0.0" and args.allow_unauthenticated


def test_the_cli_refuses_before_starting_anything(tmp_path):
    """`toneserve gateway --host 0.0.0.0` without keys exits with the reason, having reached no Triton;
    `toneserve serve` likewise, before it starts one (its repository does not even exist)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONESERVE_API_KEYS")}
    for flags in (["gateway", "--triton-url", "127.0.0.1:1"], ["serve", "--repository", str(tmp_path / "none")]):
        result = subprocess.run([sys.executable, "-m", "toneserve.cli", *flags, "--host", "0.0.0.0"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 2, (flags, result.stdout, result.stderr)
        assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr, flags
