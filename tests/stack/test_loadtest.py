"""loadtest/: corpus, Locust users, the baseline's parity, the compute bound and `toneserve plan`.

The Locust runs go against the session's real stack (tiny models): short, so that the file
stays well under two minutes on two cores. They check behaviour (nothing fails, nothing is
lost, the reports exist and parse, the plan keeps its SLO), never speed.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import grpc
import pytest

from toneserve.loadtest import corpus, ledger, run, triton_metrics
from toneserve.loadtest.traffic import parse_mix


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """Four short calls: every format, both rates, two speakers on two channels."""
    out = tmp_path_factory.mktemp("corpus")
    corpus.generate(out, 4, durations=(8.0, 12.0), rates=(8000, 16000), formats=("wav", "flac", "mp3", "ogg"),
                    progress=False)
    return out


# ------------------------------------------------------------------------------ no server


def test_corpus_is_deterministic_and_described(calls, tmp_path):
    again = tmp_path / "again"
    corpus.generate(again, 4, durations=(8.0, 12.0), rates=(8000, 16000), formats=("wav", "flac", "mp3", "ogg"),
                    progress=False)
    entries = corpus.load(calls)
    assert [(e.file, e.bytes) for e in entries] == [(e.file, e.bytes) for e in corpus.load(again)]
    # Byte for byte, except Ogg: FFmpeg's muxer draws each stream's serial number at random.
    assert all((calls / e.file).read_bytes() == (again / e.file).read_bytes() for e in entries if e.format != "ogg")
    assert sorted(e.format for e in entries) == ["flac", "mp3", "ogg", "wav"]
    assert {e.rate for e in entries} == {8000, 16000} and {e.channels for e in entries} == {2}
    assert sorted(e.seconds for e in entries) == [8.0, 8.0, 12.0, 12.0]
    assert all(e.turns and {t[0] for t in e.turns} <= {0, 1} for e in entries)
    from toneserve.gateway.audio import decode
    for entry in entries:
        audio = decode(calls / entry.file)
        assert audio.source_channels == 2 and abs(audio.seconds - entry.seconds) < 0.1, entry
        assert (audio.samples == decode(again / entry.file).samples).all(), entry


def test_corpus_mix_and_filters():
    assert corpus.shares(10, [4, 3, 2, 1]) == [4, 3, 2, 1]
    assert corpus.shares(3, [1, 1]) in ([2, 1], [1, 2]) and sum(corpus.shares(7, [1, 2, 3])) == 7
    items = corpus.plan(8, [15, 30], None, [8000, 16000], ["wav", "flac"], [1, 2], seed=1)
    assert {(i["format"], i["rate"], i["channels"]) for i in items} == {
        (f, r, c) for f in ("wav", "flac") for r in (8000, 16000) for c in (1, 2)}
    with pytest.raises(ValueError, match="unknown formats"):
        corpus.generate("/nonexistent", 1, formats=["aiff"])
    entry = corpus.Entry("a.wav", 15.0, 8000, 2, "wav", 1, 0, ())
    assert corpus.select([entry], formats=["wav"], rates=[8000]) == [entry]
    with pytest.raises(ValueError, match="no corpus entry matches"):
        corpus.select([entry], durations=[30])


def test_traffic_mix_parsing():
    assert parse_mix("analyze:3, upload:1,triton") == {"analyze": 3.0, "upload": 1.0, "triton": 1.0}
    with pytest.raises(ValueError, match="unknown user"):
        parse_mix("stream:1")
    with pytest.raises(ValueError, match="no user a positive weight"):
        parse_mix("analyze:0")


def test_benchmark_systems_change_only_what_they_name():
    from toneserve.loadtest.benchmark import parse_system, tuning_of
    from toneserve.model_repository.catalog import DEFAULT_TUNING

    precision, flags = parse_system("int8:instances=3,batch=1,pad=1.0")
    assert precision == "int8" and flags == {"instances": 3, "batch": 1, "pad": 1.0}
    tuning = tuning_of(flags)
    assert (tuning.instances, tuning.intra_op_threads, tuning.max_pad_ratio) == (3, DEFAULT_TUNING.intra_op_threads, 1.0)
    assert tuning.batching.max_batch_size == 1 and tuning.batching.preferred_batch_sizes == ()
    assert tuning.batching.max_queue_delay_us == DEFAULT_TUNING.batching.max_queue_delay_us
    assert tuning_of({}) == DEFAULT_TUNING
    assert tuning_of(parse_system("fp32:share=1")[1]).share_cores is True
    assert tuning_of(parse_system("fp32:share=0")[1]).share_cores is False
    for bad in ("fp16", "int8:instances=0", "int8:pad=0.5", "int8:threads=two", "int8:speed=9", "int8:share=yes"):
        with pytest.raises(ValueError, match="--systems"):
            parse_system(bad)


def test_benchmark_needs_an_fp32_system_for_the_baseline_parity(tmp_path, capsys):
    from toneserve.loadtest.benchmark import main

    code = main(["--corpus", str(tmp_path), "--systems", "int8", "int8:pad=1.0", "--out", str(tmp_path / "out")])
    assert code == 2 and "needs an fp32 system" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_ledger_credits_the_steady_window_pro_rata():
    book = {"steady_from": 10.0, "steady_until": 20.0, "names": {"Analyze": {
        "sent": 3, "errors": {},
        # [sent, answered, latency ms, audio s, ok]: inside, straddling the start, straddling the end
        "answers": [[12.0, 14.0, 2000.0, 30.0, True], [8.0, 12.0, 4000.0, 40.0, True],
                    [18.0, 22.0, 4000.0, 20.0, True]]}}}
    s = ledger.summarise(book)
    assert s["lost"] == 0 and s["answered"] == 3 and s["window_s"] == 10.0
    assert s["rtfx"] == pytest.approx((30 + 40 / 2 + 20 / 2) / 10)
    assert s["rps"] == pytest.approx((1 + 0.5 + 0.5) / 10)
    assert s["latency_ms"]["p50"] == 4000.0
    book["names"]["Analyze"]["sent"] = 4
    assert ledger.summarise(book)["lost"] == 1


def test_triton_metrics_split_queue_and_compute():
    text = "\n".join([
        '# TYPE nv_inference_request_success counter',
        'nv_inference_request_success{model="emotion2vec",version="1"} 10',
        '# TYPE nv_inference_request_failure counter',
        'nv_inference_request_failure{model="emotion2vec",reason="BACKEND",version="1"} 0',
        '# TYPE nv_inference_count counter', 'nv_inference_count{model="emotion2vec",version="1"} 10',
        '# TYPE nv_inference_exec_count counter', 'nv_inference_exec_count{model="emotion2vec",version="1"} 5',
        '# TYPE nv_inference_queue_duration_us counter',
        'nv_inference_queue_duration_us{model="emotion2vec",version="1"} 30000',
        '# TYPE nv_inference_compute_infer_duration_us counter',
        'nv_inference_compute_infer_duration_us{model="emotion2vec",version="1"} 2000000', ""])
    after = triton_metrics.parse(text)
    summary = triton_metrics.summarise(triton_metrics.delta({}, after))["emotion2vec"]
    assert summary["requests"] == 10 and summary["avg_batch"] == 2.0 and summary["failures"] == 0
    assert summary["queue_ms"] == pytest.approx(3.0) and summary["compute_ms"] == pytest.approx(200.0)
    assert triton_metrics.metrics_url("127.0.0.1:8002") == "http://127.0.0.1:8002/metrics"


def test_compute_bound_runs_every_served_model(repository, calls):
    from toneserve.loadtest import compute_bound

    result = compute_bound.measure(repository, calls, durations=[8.0], progress=False)
    assert result["recordings"] == 2 and result["audio_seconds"] == 16.0 and result["utterances"] > 0
    assert set(result["model_seconds"]) == set(compute_bound.MODELS)
    assert result["model_calls"]["sensevoice_encoder"] == result["utterances"]
    assert result["model_calls"]["emotion2vec"] >= result["utterances"]
    from toneserve.model_repository.catalog import DEFAULT_TUNING
    assert result["threads"]["emotion2vec"] == DEFAULT_TUNING.intra_op_threads  # as the repository says
    assert result["streams"] == DEFAULT_TUNING.instances and result["rtfx"] > 0 and result["cpu_cores"] > 0


# ------------------------------------------------------------------------------ against the stack


def test_smoke_run_answers_every_request(stack, calls, tmp_path):
    """4 users of all three kinds for 15 s: no failure, every request sent was answered, and
    Locust counted exactly the answers the users booked; CSV and HTML reports parse."""
    result = run.run(stack.gateway, calls, tmp_path, users=4, run_time=15, mix="analyze:2,upload:1,triton:1",
                     triton_host=stack.triton_grpc, name="smoke", request_timeout=120, progress=False)
    assert result["failures"] == 0 and result["errors"] == {}, result["errors"]
    assert result["sent"] == result["answered"] == result["requests"] > 0 and result["lost"] == 0
    assert result["consistent"]
    assert {"Analyze", "AnalyzeUpload", "triton emotion", "triton asr"} <= set(result["by_name"])
    stats = run.read_stats_csv(tmp_path / "smoke_stats.csv")
    assert stats["Aggregated"]["requests"] == result["requests"]
    assert all(stats[n]["requests"] == s["requests"] for n, s in result["by_name"].items())
    html = (tmp_path / "smoke.html").read_text()
    assert "<html" in html and "AnalyzeUpload" in html
    book = json.loads((tmp_path / "smoke_ledger.json").read_text())
    assert sum(v["sent"] for v in book["names"].values()) == result["sent"]
    assert result["rtfx"] > 0 and result["gateway_rtfx"] > 0 and result["p95"] >= result["p50"] > 0
    assert [m["name"] for m in result["served_models"]] == ["emotion", "asr", "vad"]


def test_baseline_serves_the_same_models(stack, models_root, calls, tmp_path):
    """The baseline rebuilds the export's weights for FunASR, proves parity with toneserve at
    start (emotion within 1e-3, same utterances and transcripts) and answers the API."""
    from toneserve.triton import free_port
    from toneserve.v1 import toneserve_pb2 as pb
    from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

    port = free_port()
    log = tmp_path / "baseline.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "toneserve.loadtest.baseline", "--size", "tiny",
                                    "--models-dir", str(models_root), "--port", str(port),
                                    "--check-against", stack.gateway], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "baseline listening" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.25)
        parity = json.loads(next(line for line in log.read_text().splitlines() if "parity: " in line)
                            .split("parity: ", 1)[1])
        assert parity["ok"] and parity["same_utterances"] and parity["max_emotion_diff"] < 1e-3, parity
        entry = corpus.load(calls)[0]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.AnalyzerStub(channel).Analyze(
                pb.AnalyzeRequest(audio=(calls / entry.file).read_bytes(), channel_roles={0: "agent", 1: "customer"}),
                timeout=120)
            with pytest.raises(grpc.RpcError) as bad:
                pb_grpc.AnalyzerStub(channel).Analyze(pb.AnalyzeRequest(audio=b"not audio"), timeout=30)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reply.segments and {s.speaker for s in reply.segments} <= {"agent", "customer"}
        assert reply.metadata.random_weights and abs(reply.metadata.audio_seconds - entry.seconds) < 0.1
        assert all(len(s.emotion.probabilities) == 9 for s in reply.segments)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, log.read_text()


def test_plan_keeps_the_slo_it_was_given(stack, calls, tmp_path):
    """A two-step plan through the `toneserve plan` command: report, plot and a decision whose
    load met the SLO with no errors."""
    from toneserve.cli import parser

    slo = 60000.0
    out = tmp_path / "plan"
    args = parser().parse_args(["plan", "--gateway", stack.gateway, "--triton-metrics",
                                f"127.0.0.1:{_flag(stack.process.args, '--triton-metrics-port')}",
                                "--slo-p95-ms", str(slo), "--users", "1", "2", "--step-seconds", "4",
                                "--target-streams", "10000", "--corpus", str(calls), "--warmup", "1",
                                "--pid", str(stack.process.pid), "--out", str(out)])
    assert args.func(args) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert [s["users"] for s in plan["steps"]] == [1, 2]
    decision = plan["decision"]
    chosen = next(s for s in plan["steps"] if s["users"] == decision["users"])
    assert chosen["meets_slo"] and chosen["run"]["failures"] == 0 and chosen["run"]["lost"] == 0
    assert chosen["run"]["p95"] <= slo
    assert decision["hosts"] == -(-10000 // decision["streams_per_host"])
    assert {"emotion2vec", "sensevoice_encoder", "vad"} <= set(chosen["triton"])
    assert chosen["cpu_cores"]["gateway"] > 0 and any(k.startswith("model ") for k in chosen["cpu_cores"])
    report = (out / "plan.md").read_text()
    assert "Streams per host" in report and "queue ms / request" in report
    assert (out / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "steps" / "users-2_stats.csv").is_file() and (out / "steps" / "users-2.html").is_file()


def test_plan_refuses_what_it_cannot_measure(calls, tmp_path, capsys):
    from toneserve.cli import parser

    args = parser().parse_args(["plan", "--slo-p95-ms", "1000", "--corpus", str(calls), "--triton-metrics",
                                "127.0.0.1:1", "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "no Triton metrics at http://127.0.0.1:1/metrics" in capsys.readouterr().err
