"""gateway/tls.py's reading of a certificate: its notAfter from the DER (the standard library only) equals what
cryptography reads, for both time encodings and key types; a pair that cannot be served is refused with why."""
from __future__ import annotations

import datetime

import pytest

from toneserve.gateway.tls import CertificateError, checked, not_after

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _pair(key, until: datetime.datetime) -> tuple[bytes, bytes]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "toneserve")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)).not_valid_after(until)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("until", [datetime.datetime(2031, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc),  # UTCTime
                                   datetime.datetime(2061, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)])
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_not_after_equals_cryptography_s(until, kind):
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    pem_key, pem_cert = _pair(key, until)
    assert not_after(pem_cert) == x509.load_pem_x509_certificate(pem_cert).not_valid_after_utc.timestamp()
    assert not_after(pem_cert) == until.timestamp()
    # A chain: the first certificate's (the served one), not the issuer's after it.
    _, other = _pair(ec.generate_private_key(ec.SECP256R1()), datetime.datetime(2040, 1, 1, tzinfo=datetime.timezone.utc))
    assert not_after(pem_cert + other) == until.timestamp()
    assert checked(pem_key, pem_cert) == until.timestamp()


def test_a_pair_that_cannot_be_served_is_refused_with_why():
    until = datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc)
    key, cert = _pair(ec.generate_private_key(ec.SECP256R1()), until)
    other_key, _ = _pair(ec.generate_private_key(ec.SECP256R1()), until)
    with pytest.raises(CertificateError, match="cannot be served together"):
        checked(other_key, cert)
    with pytest.raises(CertificateError):
        checked(key, b"not a certificate")
    with pytest.raises(CertificateError, match="no PEM certificate"):
        not_after(b"-----BEGIN PRIVATE KEY-----")
