"""`toneserve --version` and the defaults `--help` states."""
from __future__ import annotations

import argparse
import re
from importlib import metadata

import pytest

from toneserve import cli

# The subcommands whose options cli.py writes (the client's and the load tests' come from their parts).
OWN = ("export", "serve", "gateway", "demo", "k8s", "pack")


def _subparser(name: str) -> argparse.ArgumentParser:
    root = cli.parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[name]
    parser.parse_known_args([])  # adds the subcommand's options (they are added when it is parsed)
    return parser


def test_version_prints_the_package_metadata_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"toneserve {metadata.version('toneserve')}"


def test_the_top_level_help_lists_every_subcommand(capsys):
    # argparse expands %-formats in every help string: a stray "%" breaks `toneserve --help` itself.
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in cli.COMMANDS)
    assert "<= 5 %" in text


@pytest.mark.parametrize("name", OWN)
def test_every_option_with_a_default_states_it(name):
    parser = _subparser(name)
    silent = [a.option_strings[0] for a in parser._actions
              if a.option_strings and not isinstance(a, argparse._HelpAction)
              and a.default not in (None, False) and "default" not in (a.help or "")]
    assert silent == []
    text = parser.format_help()
    assert "%(default)" not in text


@pytest.mark.parametrize("name", ("serve", "gateway"))
def test_host_and_port_defaults_are_in_the_help(name):
    text = " ".join(_subparser(name).format_help().split())
    assert re.search(r"--host HOST .*\(default 127\.0\.0\.1\)", text)
    assert re.search(r"--port PORT [^-]*\(default 50051\)", text)


def test_scheduling_flags_state_the_measured_defaults():
    from toneserve.model_repository.catalog import DEFAULT_TUNING as measured

    helps = {a.option_strings[0]: a.help for a in _subparser("export")._actions if a.option_strings}
    expected = {"--instances": measured.instances, "--threads": measured.intra_op_threads,
                "--max-batch-size": measured.batching.max_batch_size,
                "--queue-delay-us": measured.batching.max_queue_delay_us,
                "--max-pad-ratio": f"{measured.max_pad_ratio:g}",
                "--share-cores": "on" if measured.share_cores else "off"}
    for flag, value in expected.items():
        assert f"default {value})" in helps[flag], flag

