"""API keys: which tenant a request comes from, or UNAUTHENTICATED; and each tenant's policy.

The key text has one key per line (`#` starts a comment):

    KEY TENANT [weight=W] [seconds_per_minute=S] [seconds_per_day=S]

KEY is the key itself (printable ASCII, at least 128 bits: `python -c "import secrets;
print(secrets.token_urlsafe(32))"`), or `sha256:<64 hex digits>`, its SHA-256 digest, so that the
file need hold no key at all. A tenant may have several keys (rotation); its options may be given
on any of its lines, never two different values. Only SHA-256 digests are kept in memory, and a
presented key is compared with every digest in constant time.

The text comes from `--api-keys FILE`, else from the file named by TONESERVE_API_KEYS_FILE, else
from TONESERVE_API_KEYS itself (a Kubernetes Secret as a file or as an environment variable). A
file is read again on `reload()` (SIGHUP); a new text with a mistake keeps the old keys.

Clients send `authorization: Bearer KEY`. Health checking and reflection stay open (probes carry no
key); the Analyzer RPCs need a key once keys are configured.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from toneserve.contract import Code, ToneserveError

log = logging.getLogger("toneserve.gateway")

ANONYMOUS = "default"  # the tenant of every request when no keys are configured
ENV_KEYS = "TONESERVE_API_KEYS"
ENV_KEYS_FILE = "TONESERVE_API_KEYS_FILE"
MIN_KEY_BITS = 128
DIGEST_PREFIX = "sha256:"


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class TenantPolicy:
    """What the key file says of one tenant. None: the gateway-wide default (Settings)."""
    weight: float = 1.0  # share of the gateway when tenants compete for it
    audio_seconds_per_minute: float | None = None
    audio_seconds_per_day: float | None = None


DEFAULT_POLICY = TenantPolicy()
# The option names of a key line, and the TenantPolicy field each sets.
OPTIONS = {"weight": "weight", "seconds_per_minute": "audio_seconds_per_minute",
           "seconds_per_day": "audio_seconds_per_day"}


def digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def key_bits(key: str) -> float:
    """A generous estimate of a key's strength: its length times the bits of a character drawn from
    the character classes it uses (digits, lower case, upper case, punctuation), or hex alone."""
    if all(c in string.hexdigits for c in key) and (key == key.lower() or key == key.upper()):
        alphabet = 16
    else:
        alphabet = sum(size for chars, size in ((string.digits, 10), (string.ascii_lowercase, 26),
                                                 (string.ascii_uppercase, 26), (string.punctuation, 32))
                       if any(c in chars for c in key))
    return len(key) * math.log2(max(alphabet, 2))


def check_key(key: str) -> str | None:
    """Why a key is not fit to guard the gateway, or None."""
    if not key.isascii() or not key.isprintable():
        return "a key must be printable ASCII"
    bits = key_bits(key)
    if bits < MIN_KEY_BITS or len(set(key)) < 8:
        return (f"a key of about {bits:.0f} bits is too weak (at least {MIN_KEY_BITS} random bits, e.g. "
                "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`)")
    return None


@dataclass(frozen=True)
class KeyTable:
    digests: tuple[tuple[bytes, str], ...]  # (SHA-256 of a key, its tenant)
    policies: Mapping[str, TenantPolicy]

    @property
    def tenants(self) -> frozenset[str]:
        return frozenset(tenant for _, tenant in self.digests)


def _option(where: str, word: str) -> tuple[str, float]:
    name, sep, value = word.partition("=")
    if not sep or name not in OPTIONS:
        # A field that is neither option=value nor an option's name may be a second key pasted on the line.
        shown = repr(name) if sep or name in OPTIONS else "(a field that is not option=value)"
        raise KeyFileError(f"{where}: unknown option {shown} (known: {', '.join(OPTIONS)})")
    try:
        number = float(value)
    except ValueError:
        raise KeyFileError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise KeyFileError(f"{where}: {name} must be a positive number, got {value}")
    return OPTIONS[name], number


def parse_keys(text: str, source: str = "the API keys") -> KeyTable:
    """The key table of a key text; every mistake is a KeyFileError naming the line (never the key)."""
    digests: dict[bytes, str] = {}
    options: dict[str, dict[str, float]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        parts = line.split()
        if len(parts) < 2:
            raise KeyFileError(f"{where}: expected `KEY TENANT [option=value ...]`, got {len(parts)} field(s)")
        key, tenant, *words = parts
        if key.startswith(DIGEST_PREFIX):
            hexdigest = key[len(DIGEST_PREFIX):]
            if len(hexdigest) != 64 or any(c not in string.hexdigits for c in hexdigest):
                raise KeyFileError(f"{where}: {DIGEST_PREFIX} takes 64 hex digits (a SHA-256 digest)")
            key_digest = bytes.fromhex(hexdigest)
        else:
            problem = check_key(key)
            if problem:
                raise KeyFileError(f"{where}: {problem}")
            key_digest = digest(key)
        if key_digest in digests:
            raise KeyFileError(f"{where}: a key appears twice")
        digests[key_digest] = tenant
        given = options.setdefault(tenant, {})
        for word in words:
            name, value = _option(where, word)
            if given.get(name, value) != value:
                raise KeyFileError(f"{where}: tenant {tenant!r} has two different values of {word.split('=')[0]}")
            given[name] = value
    if not digests:
        raise KeyFileError(f"{source} holds no keys: every request would be refused")
    policies = {tenant: TenantPolicy(**values) for tenant, values in options.items()}  # type: ignore[arg-type]
    return KeyTable(tuple(digests.items()), policies)


def read_keys(path: str | Path) -> KeyTable:
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"the API key file {path} is not ASCII text") from None
    return parse_keys(text, str(path))


class ApiKeys:
    """The gateway's keys, or none (authentication off). `path`: the file `reload()` reads again."""

    def __init__(self, table: KeyTable | None = None, path: str | Path | None = None):
        self.table = table
        self.path = Path(path) if path else None

    @classmethod
    def load(cls, path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> ApiKeys:
        """From `path`, else TONESERVE_API_KEYS_FILE, else TONESERVE_API_KEYS; none of them: no keys."""
        if not path and environ.get(ENV_KEYS_FILE) and environ.get(ENV_KEYS):
            raise KeyFileError(f"both {ENV_KEYS_FILE} and {ENV_KEYS} are set; set one")
        path = path or environ.get(ENV_KEYS_FILE) or None
        if path:
            return cls(read_keys(path), path)
        if environ.get(ENV_KEYS):
            return cls(parse_keys(environ[ENV_KEYS], ENV_KEYS))
        return cls()

    @property
    def enabled(self) -> bool:
        return self.table is not None

    @property
    def tenants(self) -> frozenset[str]:
        return self.table.tenants if self.table is not None else frozenset({ANONYMOUS})

    def reload(self) -> bool:
        """Read the key file again; on any mistake keep the keys in use and log why. True: reloaded."""
        if self.path is None:
            log.warning("API keys not reloaded: %s", "they come from the environment, which a running process "
                        "cannot re-read" if self.table is not None else "authentication is off")
            return False
        try:
            table = read_keys(self.path)
        except KeyFileError as exc:
            log.error("API keys not reloaded, the previous keys stay in use: %s", exc)
            return False
        self.table = table  # one assignment: a request sees the old table or the new one, never a mix
        log.info("API keys reloaded from %s: %d key(s), %d tenant(s)", self.path, len(table.digests),
                 len(table.tenants))
        return True

    def tenant(self, metadata) -> str:
        """The tenant of a request's invocation metadata."""
        table = self.table
        if table is None:
            return ANONYMOUS
        header = dict(metadata or ()).get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ToneserveError(Code.UNAUTHENTICATED, "send `authorization: Bearer <API key>`")
        presented = digest(key.strip().encode("utf-8", "surrogateescape"))
        # Compare with every digest in constant time and without stopping at a match: neither which
        # key matched nor how close another came may show in the time taken.
        found = ""
        for known, tenant in table.digests:
            if hmac.compare_digest(known, presented):
                found = found or tenant
        if not found:
            raise ToneserveError(Code.UNAUTHENTICATED, "the API key is not known")
        return found

    def policy(self, tenant: str) -> TenantPolicy:
        """The tenant's weight and quotas from the key file (defaults for a tenant it does not list)."""
        table = self.table
        return table.policies.get(tenant, DEFAULT_POLICY) if table is not None else DEFAULT_POLICY

