"""The reference pages cannot drift from the code: docs/errors.md, docs/configuration.md and docs/api.md's label
sets are what scripts/gen-docs generates now; every TONESERVE_* variable read anywhere is in the environment
table; the error table's retry column is what the SDK does; docs/api.md's sample response parses into the
proto and uses the gateway's HTTP JSON names."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from google.protobuf import json_format

from toneserve import reference
from toneserve.client.errors import AnalyzeError
from toneserve.contract import Code, Retry
from toneserve.gateway.http_api import to_json
from toneserve.v1 import toneserve_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- generated pages are current

@pytest.mark.parametrize("page", sorted(reference.PAGES))
def test_the_committed_page_is_what_the_generator_writes(page):
    committed = (ROOT / page).read_text(encoding="utf-8")
    fresh = reference.PAGES[page](committed)
    assert committed == fresh, f"{page} is stale: run {reference.REGENERATE} and commit the result"


def test_a_stale_page_is_found(tmp_path):
    for page, generate in reference.PAGES.items():  # fresh pages, whether or not the committed ones are
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text(generate((ROOT / page).read_text()), encoding="utf-8")
    assert reference.stale(tmp_path) == []
    errors = tmp_path / "docs" / "errors.md"
    errors.write_text(errors.read_text().replace("| 503 |", "| 502 |"))
    api = tmp_path / "docs" / "api.md"
    api.write_text(api.read_text().replace("`surprised`, ", ""))
    assert reference.stale(tmp_path) == ["docs/errors.md", "docs/api.md"]


def test_the_configuration_reference_holds_every_flag_of_every_subcommand():
    page = (ROOT / "docs" / "configuration.md").read_text()
    commands = reference._commands()
    assert {name for name, _, _ in commands} >= {"serve", "gateway", "analyze", "export", "k8s", "eval sentiment"}
    for name, _, parser in commands:
        section = page.split(f"\n## toneserve {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for option in set(action.option_strings) - {"-h", "--help"}:
                assert f"`{option}`" in section, f"toneserve {name} {option} is missing from docs/configuration.md"


# --------------------------------------------------------------------------- errors

def test_every_code_says_how_to_retry_and_what_to_do():
    for code in Code:
        assert isinstance(code.retry, Retry), code
        assert len(code.guide) > 40 and code.guide.endswith("."), code
    assert Code.SHUTTING_DOWN.retry is Retry.ANOTHER_REPLICA
    assert Code.OVERLOADED.retry is Code.QUOTA_EXCEEDED.retry is Code.TRITON_UNAVAILABLE.retry is Retry.AFTER_HINT


@pytest.mark.parametrize("code", list(Code), ids=lambda code: code.name)
def test_the_sdk_retries_exactly_the_codes_the_reference_calls_retryable(code):
    error = AnalyzeError(code.status, code.name, code.default_message)
    assert error.retryable == code.retryable, (
        f"{code.name}: contract.Code says retry {code.retry.name}, the SDK (client/errors.py) "
        f"{'retries' if error.retryable else 'does not retry'} it")


def test_the_error_page_lists_every_code_with_its_statuses():
    page = (ROOT / "docs" / "errors.md").read_text()
    for code in Code:
        assert f"| [`{code.name}`](#{code.name.lower()}) | {code.status} | {code.http_status} |" in page
        assert f"\n## {code.name}\n" in page and code.guide in page


# --------------------------------------------------------------------------- environment variables

# Where a variable can be read: the code, the scripts, the deployment files, the tests.
SCANNED = ("client", "gateway", "export", "model_repository", "loadtest", "kube", "toneserve", "scripts", "deploy",
           "tests", "docker-compose.yml")
VARIABLE_NAME = re.compile(r"\bTONESERVE_[A-Z][A-Z0-9_]*")


def variables_read(root: Path) -> dict[str, str]:
    """TONESERVE_* names in the scanned files -> one place each appears."""
    found: dict[str, str] = {}
    for entry in SCANNED:
        path = root / entry
        if path.is_symlink():
            continue
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()
                                               and "__pycache__" not in p.parts and p.suffix not in (".md", ".pyc")
                                               and "data" not in p.relative_to(root).parts[:2]]
        for file in files:
            if file.resolve() == Path(__file__).resolve():  # the names this test makes up
                continue
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for name in VARIABLE_NAME.findall(text):
                found.setdefault(name, str(file.relative_to(root)))
    return found


def missing_variables(root: Path) -> dict[str, str]:
    known = {variable.name for variable in reference.environment()}
    return {name: where for name, where in variables_read(root).items() if name not in known}


def test_every_toneserve_variable_read_is_in_the_environment_table():
    found = variables_read(ROOT)
    assert {"TONESERVE_HOME", "TONESERVE_API_KEY", "TONESERVE_VENV", "TONESERVE_QUOTA_STORE"} <= set(found), found
    missing = missing_variables(ROOT)
    assert not missing, ("read but missing from toneserve/reference.py's environment() (then run "
                         f"{reference.REGENERATE}): {missing}")


def test_the_variable_scan_finds_a_new_variable(tmp_path):
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "new.py").write_text('os.environ.get("TONESERVE_NEW_KNOB")\n')
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "tool").write_text('echo "${TONESERVE_HOME:-x}" "${TONESERVE_OTHER:-y}"\n')
    assert missing_variables(tmp_path) == {"TONESERVE_NEW_KNOB": "gateway/new.py", "TONESERVE_OTHER": "scripts/tool"}


def test_every_compose_variable_is_in_the_environment_table():
    compose = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", compose))
    assert "GATEWAY_PORT" in used
    known = {variable.name for variable in reference.environment()}
    assert used <= known, f"docker-compose.yml reads {sorted(used - known)}, not in toneserve/reference.py's table"


def test_the_environment_table_names_each_variable_once():
    names = [variable.name for variable in reference.environment()]
    assert len(names) == len(set(names))
    assert {variable.who for variable in reference.environment()} == {reference.USER, reference.OPERATOR,
                                                                    reference.DEVELOPER}


# --------------------------------------------------------------------------- docs/api.md's sample response

SAMPLE_MARK = "<!-- sample: AnalyzeResponse -->\n```json\n"


def api_sample(text: str | None = None) -> dict:
    text = (ROOT / "docs" / "api.md").read_text() if text is None else text
    assert SAMPLE_MARK in text, "docs/api.md lost its sample response"
    return json.loads(text.split(SAMPLE_MARK, 1)[1].split("\n```", 1)[0])


def naming_problems(sample, printed, path="") -> list[str]:
    """Where `sample` has a key the gateway's HTTP JSON (`printed`) does not, or a value that differs."""
    if isinstance(sample, dict):
        if not isinstance(printed, dict):
            return [f"{path}: an object where the gateway prints {printed!r}"]
        problems = [f"{path}.{key}: the gateway prints no such field" for key in sample if key not in printed]
        for key in sample:
            if key in printed:
                problems += naming_problems(sample[key], printed[key], f"{path}.{key}")
        return problems
    if isinstance(sample, list):
        if not isinstance(printed, list) or len(sample) != len(printed):
            return [f"{path}: {len(sample)} items, the gateway prints {printed!r}"]
        return [p for i, (s, q) in enumerate(zip(sample, printed)) for p in naming_problems(s, q, f"{path}[{i}]")]
    if isinstance(sample, float) or isinstance(printed, float):
        close = math.isclose(float(sample), float(printed), rel_tol=1e-6, abs_tol=1e-6)
        return [] if close else [f"{path}: {sample!r}, printed as {printed!r}"]
    return [] if sample == printed else [f"{path}: {sample!r}, printed as {printed!r}"]


def test_the_sample_response_is_an_analyze_response_in_the_gateway_s_json():
    sample = api_sample()
    response = json_format.Parse(json.dumps(sample), pb.AnalyzeResponse())  # unknown fields are an error
    assert len(response.segments) == 3 and len(response.speakers) == 2 and response.call.HasField("verdict")
    assert naming_problems(sample, json.loads(to_json(response))) == []


def test_the_naming_check_catches_lower_camel_case_and_a_wrong_value():
    sample = api_sample()
    sample["segments"][0]["startMs"] = sample["segments"][0].pop("start_ms")  # protobuf's parser takes either
    response = json_format.Parse(json.dumps(sample), pb.AnalyzeResponse())
    assert naming_problems(sample, json.loads(to_json(response))) == [".segments[0].startMs: the gateway prints "
                                                                      "no such field"]
    printed = json.loads(to_json(response))
    printed["call"]["talk_seconds"] = 9.0
    assert naming_problems(api_sample(), printed) == [".call.talk_seconds: 8.68, printed as 9.0"]


def distributions(node):
    if isinstance(node, dict):
        if {"labels", "probabilities", "top"} <= set(node):
            yield node
        for value in node.values():
            yield from distributions(value)
    elif isinstance(node, list):
        for value in node:
            yield from distributions(value)


def test_the_sample_response_is_consistent_with_itself_and_the_label_sets():
    sample = api_sample()
    label_sets = {what.split("`")[1]: labels for what, _, labels in reference.label_sets() if what.startswith("`")}
    found = list(distributions(sample))
    assert len(found) >= 3 * 5
    for distribution in found:
        labels, probabilities = distribution["labels"], distribution["probabilities"]
        assert len(labels) == len(probabilities) and math.isclose(sum(probabilities), 1.0, abs_tol=0.011), distribution
        assert distribution["top"] == labels[probabilities.index(max(probabilities))], distribution
    assert sample["metadata"]["emotion_labels"] == list(label_sets["emotion"])
    sentiments = set(label_sets["judgement.sentiment"])
    segments = sample["segments"]
    for segment in segments:
        for name in ("emotion", "language", "asr_emotion", "event", "itn"):
            assert segment[name]["labels"] == list(label_sets[name]), name
        words = segment["words"]
        assert segment["prosody"]["words"] == len(words)
        assert " ".join(word["text"] for word in words) == segment["transcript"]
        starts = [word["start_ms"] for word in words]
        assert starts == sorted(starts) and segment["start_ms"] <= starts[0]
        assert all(word["start_ms"] < word["end_ms"] <= segment["end_ms"] for word in words)
        sentences = segment["text_sentiment"]["sentences"]
        assert sentences[0]["start_word"] == 0 and sentences[-1]["end_word"] == len(words)
        for sentence in sentences:
            said = " ".join(w["text"] for w in words[sentence["start_word"]:sentence["end_word"]])
            assert said == sentence["text"] and sentence["sentiment"] in sentiments
        assert {segment["judgement"]["sentiment"], segment["text_sentiment"]["label"]} <= sentiments
        assert set(segment["judgement"]["flags"]) <= set(pb.Flag.keys())
    for speaker in sample["speakers"]:
        mine = [s for s in segments if s["speaker"] == speaker["speaker"]]
        assert speaker["segments"] == len(mine)
        assert math.isclose(speaker["talk_seconds"], sum(s["end_ms"] - s["start_ms"] for s in mine) / 1000)
        assert math.isclose(speaker["talk_seconds"] + speaker["non_talk_seconds"], sample["call"]["duration_seconds"])
    call = sample["call"]
    assert call["segments"] == len(segments) and call["verdict"]["sentiment"] in sentiments
    assert all(0 <= index < len(segments) for index in call["verdict"]["segment_ids"])
    assert [(p["speaker"], p["start_ms"]) for p in call["emotion_timeline"]] == \
        [(s["speaker"], s["start_ms"]) for s in segments]
    assert math.isclose(call["talk_seconds"] + call["non_talk_seconds"], call["duration_seconds"])


# --------------------------------------------------------------------------- links inside the reference pages

def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to '-', -1 -2 ...
    after repeats. Fenced code is not headings."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
        counts[slug] = counts.get(slug, 0) + 1
    return anchors


def test_github_anchors_follow_github_s_rules():
    page = "# A b\n## HTTP beside gRPC: the API (2026-12-06)\n```\n# not a heading\n```\n## A b\n"
    assert github_anchors(page) == {"a-b", "http-beside-grpc-the-api-2026-12-06", "a-b-1"}


@pytest.mark.parametrize("page", ["docs/errors.md", "docs/configuration.md", "docs/api.md", "docs/BENCHMARKS.md"])
def test_every_link_to_a_heading_of_the_page_finds_it(page):
    text = (ROOT / page).read_text()
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links or page == "docs/api.md"
    assert links <= github_anchors(text), sorted(links - github_anchors(text))


# --------------------------------------------------------------------------- docs/api.md's RPCs and routes

def test_the_api_page_lists_every_rpc_and_route():
    from toneserve.gateway import http_api

    page = (ROOT / "docs" / "api.md").read_text()
    grpc_rows = [line for line in page.splitlines() if re.match(r"\| `Analyze\w*` \|", line)]
    methods = pb.DESCRIPTOR.services_by_name["Analyzer"].methods
    assert len(grpc_rows) == len(methods)
    for method in methods:
        row = next((r for r in grpc_rows if r.startswith(f"| `{method.name}` |")), None)
        assert row is not None, f"docs/api.md lacks the RPC {method.name}"
        cells = row.split(" | ")
        assert f"`{method.input_type.name}`" in cells[1] and f"`{method.output_type.name}`" in cells[2], row
        assert ("stream of" in cells[1]) == method.client_streaming and ("stream of" in cells[2]) == \
            method.server_streaming, row
    for path, operations in http_api.openapi()["paths"].items():
        for verb in operations:
            assert f"| `{verb.upper()} {path}` |" in page, f"docs/api.md lacks {verb.upper()} {path}"
    analyze_row = next(line for line in page.splitlines() if line.startswith(f"| `POST {http_api.ANALYZE_PATH}` |"))
    thresholds = set(pb.Thresholds.DESCRIPTOR.fields_by_name)
    for param in http_api.PARAMS:
        assert param.name in thresholds or f"`{param.name}`" in analyze_row, f"query parameter {param.name}"


@pytest.mark.parametrize("page", ["README.md", "CHANGELOG.md", "docs/api.md", "docs/errors.md",
                                  "docs/configuration.md", "docs/architecture.md", "docs/security.md",
                                  "docs/BENCHMARKS.md"])
def test_every_relative_link_finds_its_file(page):
    path = ROOT / page
    targets = re.findall(r"\]\((?!https?:|#|mailto:)([^)#\s]+)", path.read_text())
    missing = [target for target in targets if not (path.parent / target).exists()]
    assert not missing, f"{page} links to files that do not exist: {missing}"
