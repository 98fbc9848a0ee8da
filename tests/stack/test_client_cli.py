"""`toneserve analyze` as a user runs it, against the real stack: a folder of mixed recordings (formats,
rates, channel counts, one broken file), every output format, reports, and a server that is not there."""
from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import re
import struct
import termios
from collections import defaultdict

import pytest

from tests.support import CLIPS, GARBAGE, toneserve_analyze
from toneserve.client import Client
from toneserve.client.formats import COLUMNS
from toneserve.triton import free_port

# <name> of the outputs: two recordings are called stereo16; the later one in input order gets -2.
NAMES = {"calls/stereo16.wav": "stereo16-2", "calls/phone8.flac": "phone8", "calls/mono16.mp3": "mono16",
         "calls/archive/mono8.ogg": "mono8", "calls/archive/stereo16.m4a": "stereo16"}


@pytest.fixture(scope="module")
def reference(stack, folder) -> dict:
    """What the SDK gives for each good file: the CLI must write exactly these segments."""
    with Client(stack.gateway) as client:
        return {name: client.analyze(folder / name) for name in CLIPS}


def segment_keys(rows) -> list[tuple]:
    return [(r["speaker"], int(r["channel"]), float(r["start_s"]), float(r["end_s"]), r["transcript"]) for r in rows]


def sdk_keys(result) -> list[tuple]:
    return [(s.speaker, s.channel, s.start, s.end, s.transcript) for s in result.segments]


def assert_garbage_is_the_one_failure(done):
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    # The summary comes last; the text file and the hidden file were not picked up.
    assert done.stderr.rstrip().splitlines()[-2:][0] == "1 of 6 failed:"
    assert done.stderr.rstrip().splitlines()[-1].startswith(f"  {GARBAGE}: INVALID_AUDIO: ")


def test_jsonl_has_exactly_one_line_per_segment_of_the_good_files(stack, folder, reference):
    done = toneserve_analyze("calls", "--format", "jsonl", "--address", stack.gateway, cwd=folder)
    assert_garbage_is_the_one_failure(done)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(tuple(row) == COLUMNS for row in rows)
    by_file = defaultdict(list)
    for row in rows:
        by_file[row["file"]].append(row)
    assert set(by_file) == set(CLIPS)
    for name, result in reference.items():
        assert segment_keys(by_file[name]) == sdk_keys(result), name
    assert len(rows) == sum(len(r.segments) for r in reference.values())
    for name, (_, _, channels, _, _) in CLIPS.items():  # the mix really is mixed
        assert reference[name].metadata.channels_in == channels
        assert {row["channel"] for row in by_file[name]} <= set(range(channels))
    assert reference["calls/phone8.flac"].metadata.sample_rate_in == 8000  # (Opus always decodes at 48 kHz)


def test_csv_loads_with_a_csv_reader_one_row_per_segment(stack, folder, reference, tmp_path):
    out = tmp_path / "segments.csv"
    done = toneserve_analyze("calls", "--format", "csv", "--out", str(out), "--jobs", "2", "--address", stack.gateway,
                             cwd=folder)
    assert_garbage_is_the_one_failure(done)
    assert done.stdout == ""
    with open(out, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert len(rows) == sum(len(r.segments) for r in reference.values())
    for name, result in reference.items():
        assert segment_keys([r for r in rows if r["file"] == name]) == sdk_keys(result), name


def test_output_order_is_the_input_order_whatever_the_jobs(stack, folder):
    runs = [toneserve_analyze("calls", "--format", "jsonl", "--jobs", jobs, "--address", stack.gateway, cwd=folder)
            for jobs in ("1", "5")]
    orders = [[(row["file"], row["start_s"], row["channel"]) for row in map(json.loads, run.stdout.splitlines())]
              for run in runs]
    assert orders[0] == orders[1]
    files = list(dict.fromkeys(f for f, _, _ in orders[0]))
    assert files == sorted(CLIPS)  # a folder is read in sorted order


def test_json_documents_and_reports_per_call(stack, folder, reference, tmp_path):
    documents, reports = tmp_path / "json", tmp_path / "reports"
    done = toneserve_analyze("calls", "--out", str(documents), "--report", str(reports), "--address", stack.gateway,
                             cwd=folder)
    assert_garbage_is_the_one_failure(done)
    assert sorted(p.name for p in documents.iterdir()) == sorted(f"{n}.json" for n in NAMES.values())
    for name, result in reference.items():
        stem = NAMES[name]
        document = json.loads((documents / f"{stem}.json").read_text(encoding="utf-8"))
        assert document["file"] == name and len(document["segments"]) == len(result.segments)
        page = (reports / f"{stem}.html").read_text(encoding="utf-8")
        traces = re.findall(r'<g id="timeline-([^"]+)"', page)
        assert traces == [s.speaker for s in result.speakers], name  # one trace per speaker
        assert not re.search(r'(?:src|href)="(?!#)', page) and "<script" not in page  # self-contained
        assert "RANDOM WEIGHTS" in page  # the session's models are random
        png = (reports / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (reports / "garbage.html").exists() and not (documents / "garbage.json").exists()


def test_a_single_file_prints_its_document_with_roles_and_thresholds(stack, folder, tmp_path):
    done = toneserve_analyze("calls/stereo16.wav", "--roles", "agent,customer", "--min-silence-ms", "2000",
                             "--report", str(tmp_path), "--quiet", "--address", stack.gateway, cwd=folder)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet: no notes either
    document = json.loads(done.stdout)
    assert [s["speaker"] for s in document["speakers"]] == ["agent", "customer"]
    assert document["metadata"]["thresholds"]["min_silence_ms"] == 2000
    page = (tmp_path / "stereo16.html").read_text(encoding="utf-8")
    assert re.findall(r'<g id="timeline-([^"]+)"', page) == ["agent", "customer"]


def test_the_address_comes_from_the_environment_and_the_flag_wins(stack, folder):
    dead = f"127.0.0.1:{free_port()}"
    from_env = toneserve_analyze("calls/mono16.mp3", cwd=folder, env={"TONESERVE_ADDRESS": stack.gateway})
    flag_wins = toneserve_analyze("calls/mono16.mp3", "--address", stack.gateway, cwd=folder,
                                  env={"TONESERVE_ADDRESS": dead})
    assert from_env.returncode == 0 and flag_wins.returncode == 0, (from_env.stderr, flag_wins.stderr)
    assert json.loads(from_env.stdout)["segments"]


def test_missing_paths_are_failures_and_the_rest_is_analysed(stack, folder):
    done = toneserve_analyze("calls/mono16.mp3", "calls/nope.wav", "recordings/*.wav", "--format", "jsonl",
                             "--address", stack.gateway, cwd=folder)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "calls/nope.wav: NOT_FOUND" in done.stderr and "recordings/*.wav: NOT_FOUND" in done.stderr
    assert {json.loads(line)["file"] for line in done.stdout.splitlines()} == {"calls/mono16.mp3"}


@pytest.mark.parametrize("quiet", [False, True])
def test_the_progress_bar_shows_on_a_terminal_only(stack, folder, quiet):
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    try:
        done = toneserve_analyze("calls/mono16.mp3", "calls/phone8.flac", "--format", "jsonl",
                                 "--address", stack.gateway, *(["--quiet"] if quiet else []), cwd=folder,
                                 stderr=secondary)
        os.close(secondary)
        terminal = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the writer is gone and everything was read
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0
    assert (b"2/2" in terminal) is not quiet, terminal.decode(errors="replace")
    # Piped (every other test here), stderr carries no bar.
    piped = toneserve_analyze("calls/mono16.mp3", "--address", stack.gateway, cwd=folder)
    assert "it/s" not in piped.stderr and "file/s" not in piped.stderr and "%|" not in piped.stderr
