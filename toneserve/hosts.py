"""Which hosts only this machine can reach: the gateway refuses to serve the network without API keys,
and the SDK refuses to send a key in plaintext across it. Standard library only (the client needs it)."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (an address or name, IPv6 in brackets or not). A name
    other than localhost counts as the network: what it resolves to can change."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
