"""The SDK's public surface, without a server."""
from __future__ import annotations

import inspect

from toneserve.client import AsyncClient, Client


def test_no_grpc_type_in_the_public_signatures():
    for method in (Client.__init__, Client.analyze, AsyncClient.analyze):
        assert "grpc" not in str(inspect.signature(method)), method
