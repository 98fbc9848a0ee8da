"""Model hubs: ModelScope and Hugging Face ids, resolved to a folder on this machine.

* Which hub: an id a family knows says it (``iic/...`` on ModelScope, ``emotion2vec/...`` and
  ``FunAudioLLM/...`` on Hugging Face); ``ms:<id>`` / ``hf:<id>`` say it explicitly; any other
  ``owner/name`` is taken as a ModelScope id (FunASR's default hub). :func:`hub_of` decides.
* ``revision`` pins a branch, tag or commit (ModelScope's ``revision``, Hugging Face's ``revision``).
* Offline: the hub's endpoint is probed first (DNS + TCP connect, ``probe_timeout`` seconds), so an
  unreachable hub fails in about that time, not after the clients' retries. When the probe fails but the
  model is already in the hub's cache, the cached copy is used (``local_files_only=True``); else
  :class:`SourceUnavailable` names the hub tried and the alternatives (the other hub, a local folder,
  random weights).
* :func:`folder_digest`: the sha256 of every file of what was downloaded, for the manifest.

Endpoints: ModelScope: argument > ``MODELSCOPE_ENDPOINT`` > ``MODELSCOPE_DOMAIN`` > https://modelscope.cn;
Hugging Face: argument > ``HF_ENDPOINT`` > https://huggingface.co (each client's own precedence). Caches:
``cache_dir`` argument > ``MODELSCOPE_CACHE`` / ``HF_HUB_CACHE`` > the client's default.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from toneserve.export.artifacts import sha256_file
from toneserve.export.errors import SourceUnavailable

MS, HF = "ms", "hf"
HUB_NAMES = {MS: "ModelScope", HF: "Hugging Face"}
DEFAULT_ENDPOINTS = {MS: "https://modelscope.cn", HF: "https://huggingface.co"}
# Organisations that publish these models on Hugging Face only under their own name.
HF_ORGS = ("emotion2vec", "FunAudioLLM")


def hub_of(ident: str, known: dict[str, str]) -> tuple[str, str]:
    """(hub, id) of an id: an ``ms:`` / ``hf:`` prefix, else the hub ``known`` (id -> hub) gives, else
    Hugging Face for its known organisations, else ModelScope."""
    low = ident.lower()
    for hub in (MS, HF):
        if low.startswith(hub + ":"):
            return hub, ident[len(hub) + 1:].strip()
    if ident in known:
        return known[ident], ident
    if ident.split("/", 1)[0] in HF_ORGS:
        return HF, ident
    return MS, ident


def hub_endpoint(endpoint: str | None = None, hub: str = MS) -> str:
    """The hub's endpoint with its client's precedence (see the module docstring)."""
    if hub == MS:
        ep = endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN", "").strip()
    else:
        ep = endpoint or os.environ.get("HF_ENDPOINT", "").strip()
    ep = ep or DEFAULT_ENDPOINTS[hub]
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", ep):
        ep = "https://" + ep
    return ep.rstrip("/")


def _probe_target(endpoint: str) -> tuple[str, int, str]:
    """(host, port, what) to connect to: the endpoint, or the HTTP(S) proxy that would carry it."""
    u = urlparse(endpoint)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        pu = urlparse(proxy if "://" in proxy else "http://" + proxy)
        if pu.hostname:
            return pu.hostname, pu.port or 80, f"proxy {pu.hostname}:{pu.port or 80} for {host}"
    return host, port, f"{host}:{port}"


def probe_endpoint(endpoint: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to the endpoint (or its proxy) opens within ``timeout``
    seconds (DNS included); else why not, in words. Never takes much longer than ``timeout``."""
    host, port, what = _probe_target(endpoint)
    if not host:
        return f"endpoint {endpoint!r} names no host"
    deadline = time.monotonic() + timeout
    box: dict[str, Any] = {}

    def lookup():
        try:
            box["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["error"] = e

    t = threading.Thread(target=lookup, name="toneserve-hub-dns", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"DNS lookup of {host} gave no answer within {timeout:g} s"
    if "error" in box:
        return f"DNS lookup of {host} failed ({box['error']})"
    last: str = "no address"
    for fam, typ, proto, _, addr in box["addrs"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            last = f"timed out after {timeout:g} s"
            break
        try:
            with socket.socket(fam, typ, proto) as s:
                s.settimeout(remaining)
                s.connect(addr)
            return None
        except socket.timeout:
            last = f"timed out after {timeout:g} s"
        except OSError as e:
            last = str(e) or type(e).__name__
    return f"TCP connect to {what} failed ({last})"


def _cache_dir(cache_dir: str | os.PathLike | None, hub: str) -> str | None:
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    return os.environ.get("MODELSCOPE_CACHE" if hub == MS else "HF_HUB_CACHE") or None


def _download(hub: str, model_id: str, *, revision: str | None, cache: str | None, endpoint: str | None,
              offline: bool) -> Path:
    if hub == MS:
        from modelscope import snapshot_download

        kwargs: dict[str, Any] = {"cache_dir": cache}
        if revision:
            kwargs["revision"] = revision
        if offline:
            kwargs["local_files_only"] = True
        elif endpoint is not None:
            kwargs["endpoint"] = endpoint
        return Path(snapshot_download(model_id, **kwargs))
    from huggingface_hub import snapshot_download as hf_snapshot_download

    kwargs = {"cache_dir": cache, "revision": revision, "local_files_only": offline}
    if endpoint is not None and not offline:
        kwargs["endpoint"] = endpoint
    return Path(hf_snapshot_download(model_id, **kwargs))


def _cached(hub: str, model_id: str, revision: str | None, cache: str | None) -> Path | None:
    """The model's folder in the hub's cache, without touching the network."""
    try:
        path = _download(hub, model_id, revision=revision, cache=cache, endpoint=None, offline=True)
    except Exception:
        return None
    return path if path.is_dir() else None


def unavailable(hub: str, model_id: str, endpoint: str, why: str, cache: str | None, alternatives: str,
                revision: str | None = None) -> SourceUnavailable:
    name = HUB_NAMES[hub]
    env_ep, env_cache = (("MODELSCOPE_ENDPOINT", "MODELSCOPE_CACHE") if hub == MS else ("HF_ENDPOINT", "HF_HUB_CACHE"))
    where = f"the {name} cache {cache}" if cache else f"the default {name} cache"
    other = HF if hub == MS else MS
    pinned = f" at revision {revision!r}" if revision else ""
    download = (f"modelscope download {model_id} --local-dir DIR" if hub == MS
                else f"hf download {model_id} --local-dir DIR")
    return SourceUnavailable(
        f"cannot fetch {model_id!r}{pinned} from {name} ({endpoint}): {why}; it is not in {where} either "
        f"({env_ep} picks another endpoint, {env_cache} another cache). Alternatives: the same model on "
        f"{HUB_NAMES[other]} ('{other}:<id>'), or {alternatives}. For example copy the model from a machine "
        f"that reaches the hub (`{download}`) and give DIR as the source.")


def fetch(hub: str, model_id: str, *, alternatives: str, revision: str | None = None,
          cache_dir: str | os.PathLike | None = None, probe_timeout: float = 3.0,
          endpoint: str | None = None) -> Path:
    """The downloaded (or cached) folder of ``model_id`` on ``hub``; :class:`SourceUnavailable` within about
    ``probe_timeout`` seconds when the hub is unreachable and the cache does not hold it."""
    ep = hub_endpoint(endpoint, hub)
    cache = _cache_dir(cache_dir, hub)
    problem = probe_endpoint(ep, probe_timeout)
    if problem is not None:
        cached = _cached(hub, model_id, revision, cache)
        if cached is None:
            raise unavailable(hub, model_id, ep, problem, cache, alternatives, revision)
        return cached
    try:
        return _download(hub, model_id, revision=revision, cache=cache,
                         endpoint=ep if endpoint is not None else None, offline=False)
    except Exception as e:  # network, auth, unknown id or revision: all mean "not from the hub"
        raise unavailable(hub, model_id, ep, f"download failed ({type(e).__name__}: {e})", cache, alternatives,
                          revision) from e


def folder_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden entries, such as the clients' bookkeeping, aside)."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = sha256_file(path)
    return out
