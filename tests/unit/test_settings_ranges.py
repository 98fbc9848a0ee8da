"""Gateway settings out of range are refused when built, and the command says so in one line."""
import argparse

import pytest

from toneserve.console import CommandError
from toneserve.gateway.settings import Settings


@pytest.mark.parametrize("field", ["max_requests", "max_inflight", "utterances_per_request"])
def test_counts_below_one_are_refused(field):
    with pytest.raises(ValueError, match=field):
        Settings(**{field: 0})


@pytest.mark.parametrize("field", ["tenant_audio_seconds_per_minute", "tenant_audio_seconds_per_day",
                                   "max_requests_per_tenant"])
def test_quotas_must_be_positive_or_unset(field):
    with pytest.raises(ValueError, match=field):
        Settings(**{field: 0})
    assert getattr(Settings(**{field: None}), field) is None
    assert getattr(Settings(**{field: 5}), field) == 5


def test_the_command_answers_a_flag_out_of_range_as_a_usage_error():
    from toneserve import cli

    parser = argparse.ArgumentParser()
    cli._add_gateway_options(parser)
    args = parser.parse_args(["--max-triton-calls", "0"])
    with pytest.raises(CommandError, match="max-triton-calls"):
        cli._settings(args)
