"""Where the gateway is and how to talk to it: address, API key, TLS.

Each setting comes from the argument when given, else from the environment
(TONESERVE_ADDRESS, TONESERVE_API_KEY, TONESERVE_CA_CERT), else the default: a local
gateway in plaintext without a key.

An API key is never sent in plaintext beyond this machine: anyone on the path could read it and
use it. Sending one to a non-loopback address without TLS takes `allow_plaintext_key=True` (or
TONESERVE_ALLOW_PLAINTEXT_KEY=1), for a network known to be private.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
ENV_ADDRESS = "TONESERVE_ADDRESS"
ENV_API_KEY = "TONESERVE_API_KEY"
ENV_CA_CERT = "TONESERVE_CA_CERT"
ENV_ALLOW_PLAINTEXT_KEY = "TONESERVE_ALLOW_PLAINTEXT_KEY"

# Analyze takes up to 64 MiB (larger files go through AnalyzeUpload); an hour-long call's
# response is a few MB.
MAX_MESSAGE_BYTES = 80 * 1024 * 1024


def is_local(address: str) -> bool:
    """Whether a gRPC target is on this machine: a loopback address, localhost or a Unix socket. Any
    other name counts as the network (what it resolves to can change)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    target = address.split(":///", 1)[-1] if "://" in address else address.removeprefix("ipv4:").removeprefix("ipv6:")
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or target.startswith("[") else target
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# gRPC target schemes that may resolve to several addresses, which calls are balanced over.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


@dataclass(frozen=True)
class Connection:
    address: str
    api_key: str | None = field(default=None, repr=False)  # never printed
    root_certificates: bytes | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def resolve(cls, address: str | None = None, api_key: str | None = None,
                ca_cert: str | os.PathLike | None = None, tls: bool | None = None,
                allow_plaintext_key: bool | None = None) -> Connection:
        """Arguments first, then the environment. A CA certificate turns TLS on; `tls=True` alone trusts
        the system's root certificates; `tls=False` is plaintext whatever TONESERVE_CA_CERT says. An API key
        goes in plaintext to this machine only, unless `allow_plaintext_key`."""
        if tls is False and ca_cert:
            raise ValueError("a CA certificate is for TLS, and tls=False asks for plaintext")
        address = address or os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS
        api_key = api_key or os.environ.get(ENV_API_KEY) or None
        ca_cert = None if tls is False else ca_cert or os.environ.get(ENV_CA_CERT) or None
        roots = None
        if ca_cert:
            try:
                roots = Path(ca_cert).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read the CA certificate {ca_cert}: {exc.strerror}") from None
            if b"-----BEGIN CERTIFICATE-----" not in roots:
                raise ValueError(f"{ca_cert} is not a PEM certificate (no BEGIN CERTIFICATE line)")
        connection = cls(address, api_key, roots, bool(tls) or roots is not None)
        if allow_plaintext_key is None:
            allow_plaintext_key = os.environ.get(ENV_ALLOW_PLAINTEXT_KEY, "") in ("1", "true", "yes")
        if connection.api_key and not connection.tls and not is_local(address) and not allow_plaintext_key:
            raise ValueError(f"refusing to send the API key in plaintext to {address}: anyone on the way could "
                             f"read it. Use TLS (ca_cert / {ENV_CA_CERT}, or tls=True), or, on a network known "
                             f"to be private, allow_plaintext_key=True ({ENV_ALLOW_PLAINTEXT_KEY}=1)")
        return connection

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def _channel_args(self):
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if self.address.startswith(BALANCED_SCHEMES):
            # A target that names several servers (a headless Service's DNS name: every gateway pod) gets
            # calls spread over all of them; gRPC's default would send every call to the first.
            options.append(("grpc.lb_policy_name", "round_robin"))
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates) if self.tls else None
        return credentials, options

    def channel(self) -> grpc.Channel:
        credentials, options = self._channel_args()
        if credentials is None:
            return grpc.insecure_channel(self.address, options=options)
        return grpc.secure_channel(self.address, credentials, options=options)

    def aio_channel(self) -> grpc.aio.Channel:
        credentials, options = self._channel_args()
        if credentials is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, credentials, options=options)
