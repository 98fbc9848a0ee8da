"""The SDK's public surface, without a server."""
from __future__ import annotations

import inspect

from toneserve.client import AsyncClient, Client


def test_no_grpc_type_in_the_public_signatures():
    for method in (Client.__init__, Client.analyze, AsyncClient.analyze):
        assert "grpc" not in str(inspect.signature(method)), method


def test_include_embeddings_reaches_the_request_from_every_method_and_the_command_line():
    import argparse

    from toneserve.client.cli import add_arguments, request_options
    from toneserve.client.sdk import _analyze_request

    for method in (Client.analyze, AsyncClient.analyze, Client.analyze_stream, AsyncClient.analyze_stream):
        assert inspect.signature(method).parameters["include_embeddings"].default is False, method
    common = dict(language="auto", window_seconds=0.0, use_itn=False, channel_roles=None, mix_channels=False,
                  thresholds=None, request_id="")
    assert _analyze_request(**common, include_embeddings=True).include_embeddings
    assert not _analyze_request(**common).include_embeddings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for flags, expected in ((["--include-embeddings"], True), ([], False)):
        options = request_options(parser.parse_args(["call.wav", *flags]))
        assert options["include_embeddings"] is expected
        # `toneserve analyze` and `toneserve stream` hand the options to the SDK as they are.
        assert set(options) <= set(inspect.signature(Client.analyze).parameters)
        assert set(options) <= set(inspect.signature(Client.analyze_stream).parameters)
