"""A rotated TLS certificate, served without a restart by a real gateway: its files swapped the way Kubernetes
updates a mounted Secret (a `..data` symlink replaced), then SIGHUP; new connections see the new certificate on
gRPC and on HTTP, the expiry gauge follows; a bad new pair keeps the old one serving, logged."""
from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.stack.gateway_alone import gateway_without_triton, health
from tests.support import metric, stop_stack
from toneserve.triton import free_port

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

GAUGE = "toneserve_tls_certificate_expiry_timestamp_seconds"
POLL = 5.0  # gateway/settings.py's tls_poll_seconds


def make_pair(days: int) -> tuple[bytes, bytes, float]:
    """(PEM key, PEM certificate, notAfter) of a self-signed certificate for 127.0.0.1, valid for `days`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM), cert.not_valid_after_utc.timestamp())


class Secret:
    """A folder laid out as the kubelet mounts a Secret: tls.crt -> ..data/tls.crt, ..data -> ..<version>/."""

    def __init__(self, folder: Path):
        self.folder, self.version = folder, 0
        for name in ("tls.crt", "tls.key"):
            (folder / name).symlink_to(f"..data/{name}")

    def write(self, key: bytes, cert: bytes) -> None:
        self.version += 1
        version = self.folder / f"..v{self.version}"
        version.mkdir()
        (version / "tls.key").write_bytes(key)
        (version / "tls.crt").write_bytes(cert)
        (self.folder / "..data_tmp").symlink_to(version.name)
        os.replace(self.folder / "..data_tmp", self.folder / "..data")  # the swap, atomic


def presented(port: int) -> bytes:
    """The certificate (DER) a new TLS connection to `port` is shown (ALPN h2, as gRPC clients offer)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.getpeercert(binary_form=True) or b""


def der(cert: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.decode())


def https_health(port: int, cert: bytes) -> int:
    context = ssl.create_default_context(cadata=cert.decode())
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/health", timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:  # NOT_SERVING: no Triton, but the TLS handshake was made
        return error.code


def test_a_rotated_certificate_is_served_to_new_connections(tmp_path):
    secret = Secret(tmp_path)
    old_key, old_cert, old_expiry = make_pair(days=30)
    secret.write(old_key, old_cert)
    http_port, metrics_port = free_port(), free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    log = tmp_path / "gateway.log"
    gateway, address = gateway_without_triton(
        f"127.0.0.1:{free_port()}", log, "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"),
        "--http-port", str(http_port), "--metrics-port", str(metrics_port), root_certificates=old_cert)
    port = int(address.rsplit(":", 1)[1])
    try:
        assert presented(port) == presented(http_port) == der(old_cert)
        assert metric(metrics, GAUGE) == old_expiry
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(old_cert)) as kept:  # open before the change
            health_stub, request = health_pb2_grpc.HealthStub(kept), health_pb2.HealthCheckRequest()
            health_stub.Check(request, timeout=5)

            # 1. The files change (the Secret updated): picked up by the poll.
            new_key, new_cert, new_expiry = make_pair(days=60)
            secret.write(new_key, new_cert)
            deadline = time.monotonic() + POLL + 10
            while presented(port) != der(new_cert):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            polled = time.monotonic()
            assert presented(http_port) == der(new_cert)
            assert metric(metrics, GAUGE) == new_expiry
            assert health(address, new_cert) == "NOT_SERVING"  # a client trusting the new certificate alone
            with pytest.raises(grpc.RpcError):
                health(address, old_cert)  # ... and one trusting the old one alone is refused
            assert https_health(http_port, new_cert) == 503
            health_stub.Check(request, timeout=5)  # the connection opened before keeps its certificate

        # 2. SIGHUP, just after a poll: reloaded at once, well before the next poll.
        third_key, third_cert, third_expiry = make_pair(days=90)
        secret.write(third_key, third_cert)
        gateway.send_signal(signal.SIGHUP)
        deadline = polled + POLL - 1.5
        while presented(port) != der(third_cert):
            assert time.monotonic() < deadline, "SIGHUP did not reload before the next poll"
            time.sleep(0.05)
        assert presented(http_port) == der(third_cert) and metric(metrics, GAUGE) == third_expiry

        # 3. A bad pair (a key of another certificate), by SIGHUP and by the poll: the old one goes on serving.
        other_key, _, _ = make_pair(days=120)
        fourth_key, fourth_cert, fourth_expiry = make_pair(days=120)
        secret.write(other_key, fourth_cert)
        gateway.send_signal(signal.SIGHUP)
        time.sleep(POLL + 1.5)
        assert presented(port) == presented(http_port) == der(third_cert)
        assert metric(metrics, GAUGE) == third_expiry
        assert health(address, third_cert) == "NOT_SERVING"
        assert "still serving the previous certificate" in log.read_text()
        # An unreadable one too.
        (tmp_path / "..data").unlink()
        gateway.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert presented(port) == der(third_cert) and gateway.poll() is None
        secret.write(fourth_key, fourth_cert)  # a good pair again: served
        gateway.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while presented(port) != der(fourth_cert):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert metric(metrics, GAUGE) == fourth_expiry
    finally:
        assert stop_stack(gateway) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_without_tls_there_is_no_expiry_gauge(tmp_path):
    metrics_port = free_port()
    gateway, _ = gateway_without_triton(f"127.0.0.1:{free_port()}", tmp_path / "gateway.log",
                                        "--metrics-port", str(metrics_port))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    finally:
        assert stop_stack(gateway) == 0
    assert "toneserve_requests" in text and GAUGE not in text
