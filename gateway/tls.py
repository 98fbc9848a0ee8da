"""The gateway's TLS certificate and key, served by gRPC and the HTTP API, reloaded when they are rotated.

A rotated certificate reaches the gateway without a restart: on SIGHUP, and when the files change (a
Kubernetes Secret mounted as a volume is updated by swapping a symlink, so the files' identity is polled:
device, inode, size and modification time, each path followed to its file). A new pair is read, checked
(the key must match the certificate: both loaded into a fresh ssl context) and only then served; a bad one
(unreadable, not PEM, a key of another certificate) is logged as an error and the old pair goes on serving.

New connections get the new pair: gRPC asks `_fetch` at each handshake (grpc.dynamic_ssl_server_credentials),
the HTTP listener's ssl.SSLContext is loaded again in place. Connections already open keep theirs.

`expiry` is the served certificate's notAfter (unix seconds): the gateway's
toneserve_tls_certificate_expiry_timestamp_seconds gauge. It is read from the certificate's DER with the standard
library (the gateway image has no X.509 package): `not_after` walks the few ASN.1 elements before it.
"""
from __future__ import annotations

import asyncio
import calendar
import logging
import os
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from toneserve.gateway.tasks import cancel

log = logging.getLogger("toneserve.gateway")

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class CertificateError(ValueError):
    """A key and certificate chain that cannot be served; the message says why."""


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    if at + 2 > len(der):
        raise CertificateError("the certificate's DER ends early")
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(der[at:at + count], "big"), at + count
    if at + length > len(der):
        raise CertificateError("the certificate's DER ends early")
    return tag, at, at + length


def not_after(chain: bytes) -> float:
    """The first certificate of a PEM chain's notAfter, in unix seconds (RFC 5280: Certificate ::= SEQUENCE {
    tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE {
    notBefore, notAfter }, ... }, ... }; a time is UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ)."""
    found = _PEM_CERTIFICATE.search(chain)
    if found is None:
        raise CertificateError("no PEM certificate in the chain")
    try:
        der = ssl.PEM_cert_to_DER_cert(found.group().decode("ascii"))
    except ValueError as exc:
        raise CertificateError(f"the certificate is not valid PEM ({exc})") from None
    _, certificate, _ = _element(der, 0)
    _, at, _ = _element(der, certificate)  # tbsCertificate's fields
    tag, _, end = _element(der, at)
    if tag == 0xA0:  # [0] version
        at = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, at = _element(der, at)
    _, validity, _ = _element(der, at)
    _, _, after = _element(der, validity)  # past notBefore
    tag, start, end = _element(der, after)
    text = der[start:end].decode("ascii")
    if tag == 0x17 and re.fullmatch(r"\d{12}Z", text):  # UTCTime: years 1950-2049
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif not (tag == 0x18 and re.fullmatch(r"\d{14}Z", text)):
        raise CertificateError(f"the certificate's notAfter is not a time DER encodes ({text!r})")
    return float(calendar.timegm((int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                                  int(text[12:14]), 0, 0, 0)))


def _load(context: ssl.SSLContext, key: bytes, chain: bytes) -> None:
    """Load a PEM pair into `context` (ssl loads them from files only: a private folder of our own, removed once
    they are loaded). A key that is not the certificate's, or anything unreadable, raises ssl.SSLError."""
    with tempfile.TemporaryDirectory(prefix="toneserve-tls-") as folder:
        os.chmod(folder, 0o700)
        key_path, chain_path = Path(folder) / "key.pem", Path(folder) / "chain.pem"
        key_path.write_bytes(key)
        chain_path.write_bytes(chain)
        context.load_cert_chain(chain_path, key_path)


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def checked(key: bytes, chain: bytes) -> float:
    """The pair's certificate notAfter, once the pair is known servable; CertificateError says why it is not."""
    try:
        _load(_server_context(), key, chain)
    except ssl.SSLError as exc:
        raise CertificateError(f"the key and certificate cannot be served together ({exc.reason or exc})") from None
    return not_after(chain)


class ServedCertificate:
    """The pair the gateway serves: from PEM bytes (`key`, `chain`), or from files (`key_path`, `cert_path`) that
    `reload` and `watch` read again. `on_change(expiry)`: told each pair's notAfter as it starts being served."""

    def __init__(self, key: bytes, chain: bytes, key_path: Path | None = None, cert_path: Path | None = None,
                 on_change: Callable[[float], None] = lambda expiry: None):
        self.expiry = checked(key, chain)
        self.key, self.chain = key, chain
        self.key_path, self.cert_path = key_path, cert_path
        self.on_change = on_change
        self.contexts: list[ssl.SSLContext] = []  # the HTTP listener's, loaded again on reload
        self._lock = threading.Lock()  # gRPC calls `_fetch` from its own threads
        self._grpc_stale = False
        self._identity = self._stat()
        self._task: asyncio.Task | None = None

    @classmethod
    def from_files(cls, key_path: Path, cert_path: Path) -> ServedCertificate:
        """CertificateError (unreadable files, a bad pair) where they cannot be served."""
        key, chain = cls._read(Path(key_path), Path(cert_path))
        return cls(key, chain, Path(key_path), Path(cert_path))

    @staticmethod
    def _read(key_path: Path, cert_path: Path) -> tuple[bytes, bytes]:
        try:
            return key_path.read_bytes(), cert_path.read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None

    def _stat(self) -> tuple | None:
        if self.key_path is None or self.cert_path is None:
            return None
        identity: list[tuple[int, int, int, int] | None] = []
        for path in (self.key_path, self.cert_path):
            try:
                st = path.stat()  # follows symlinks: a swapped ..data link is a new file
                identity.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                identity.append(None)
        return tuple(identity)

    # --- what the listeners are given ------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._grpc_config(), self._fetch)

    def _grpc_config(self):
        return grpc.ssl_server_certificate_configuration([(self.key, self.chain)])

    def _fetch(self):
        """gRPC, at a new connection's handshake: the new pair where it changed since, else None (keep)."""
        with self._lock:
            if not self._grpc_stale:
                return None
            self._grpc_stale = False
            return self._grpc_config()

    def ssl_context(self) -> ssl.SSLContext:
        """A server context of the pair for the HTTP listener, loaded again in place when the pair changes."""
        context = _server_context()
        _load(context, self.key, self.chain)
        self.contexts.append(context)
        return context

    # --- rotation ----------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the files again and serve them; a bad pair is logged and the old one kept. True when it changed."""
        if self.key_path is None or self.cert_path is None:
            return False
        identity = self._stat()
        try:
            key, chain = self._read(self.key_path, self.cert_path)
            expiry = checked(key, chain)
        except CertificateError as exc:
            log.error("TLS: not serving the new %s and %s (%s); still serving the previous certificate",
                      self.cert_path, self.key_path, exc)
            self._identity = identity  # told once per change, not at every poll
            return False
        self._identity = identity
        if (key, chain) == (self.key, self.chain):
            return False
        for context in self.contexts:
            _load(context, key, chain)
        with self._lock:
            self.key, self.chain, self.expiry = key, chain, expiry
            self._grpc_stale = True
        self.on_change(expiry)
        log.warning("TLS: serving the new certificate from %s to new connections (valid until %s UTC)",
                    self.cert_path, _utc(expiry))
        return True

    def changed(self) -> bool:
        """Whether the files are not those last read."""
        return self._identity != self._stat()

    def watch(self, interval: float) -> None:
        """Reload whenever the files change, looking every `interval` seconds."""
        if self.key_path is not None and self._task is None:
            self._task = asyncio.create_task(self._poll(interval), name="tls-watch")

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self.changed():
                    self.reload()
            except Exception as exc:  # the watch must outlive any one bad read
                log.error("TLS: reloading the certificate failed: %s", exc, exc_info=exc)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


__all__ = ["CertificateError", "ServedCertificate", "not_after", "checked"]
