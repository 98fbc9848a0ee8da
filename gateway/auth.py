"""API keys: which tenant a request comes from, or UNAUTHENTICATED.

The key file has one `KEY TENANT` pair per line (`#` starts a comment). Clients send
`authorization: Bearer KEY`. Health checking and reflection stay open (probes carry no
key); the Analyzer RPCs need a key once a key file is given.
"""
from __future__ import annotations

import hmac
from pathlib import Path

from toneserve.contract import Code, ToneserveError

ANONYMOUS = "default"  # the tenant of every request when no key file is configured


class KeyFileError(ValueError):
    pass


def read_keys(path: str | Path) -> dict[str, str]:
    keys: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeyFileError(f"{path}:{number}: expected `KEY TENANT`, got {len(parts)} field(s)")
        key, tenant = parts
        if key in keys:
            raise KeyFileError(f"{path}:{number}: a key appears twice")
        keys[key] = tenant
    if not keys:
        raise KeyFileError(f"{path} holds no keys: every request would be refused")
    return keys


class ApiKeys:
    def __init__(self, keys: dict[str, str] | None = None):
        self.keys = keys  # None: authentication is off

    def tenant(self, metadata) -> str:
        """The tenant of a request's invocation metadata."""
        if self.keys is None:
            return ANONYMOUS
        header = dict(metadata or ()).get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ToneserveError(Code.UNAUTHENTICATED, "send `authorization: Bearer <API key>`")
        # Compare against every key in constant time: which key was close must not leak.
        found = [tenant for known, tenant in self.keys.items() if hmac.compare_digest(known, key.strip())]
        if not found:
            raise ToneserveError(Code.UNAUTHENTICATED, "the API key is not known")
        return found[0]
