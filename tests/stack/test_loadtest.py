"""loadtest/ against the session's real stack: Locust users, the baseline's parity and `toneserve plan`.

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

from toneserve.loadtest import corpus, run


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


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
    assert [m["name"] for m in result["served_models"]] == ["emotion", "asr", "vad", "speaker", "text_sentiment"]


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
    # Memory is read each step (--pid): the replica's peak, the whole tree's; this machine holds one replica.
    assert decision["replica_rss_mb"] == pytest.approx(max(sum(s["rss_mb"].values()) for s in plan["steps"]), abs=0.1)
    assert decision["replica_rss_mb"] > 0
    assert decision["replicas_per_host"] == 1 and decision["limited_by"] in ("cpu", "memory")
    assert {"emotion2vec", "sensevoice_encoder", "vad"} <= set(chosen["triton"])
    assert chosen["cpu_cores"]["gateway"] > 0 and any(k.startswith("model ") for k in chosen["cpu_cores"])
    report = (out / "plan.md").read_text()
    assert "Streams per replica" in report and "streams per host" in report and "queue ms / request" in report
    assert (out / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "steps" / "users-2_stats.csv").is_file() and (out / "steps" / "users-2.html").is_file()




def test_stages_times_each_stage_of_a_short_request(stack, tmp_path):
    """loadtest/stages.py runs the gateway's own stages one by one (docs/BENCHMARKS.md, part 5): every stage is
    timed, and the whole Analyze through the gateway too."""
    import asyncio

    from toneserve.loadtest import stages
    from toneserve.samples import speechlike, wav_bytes

    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(speechlike(2.0, seed=4), 16000))
    figures = asyncio.run(stages.measure(stack.triton_grpc, stack.gateway, clip, repeat=1))
    assert set(figures["stages_ms"]) == {"decode", "vad call", "emotion call(s)", "asr call", "emotion + asr together",
                                         "text sentiment call(s)", "segment cpu (pitch, words, judgement)",
                                         "Analyze through the gateway"}
    assert all(ms > 0 for ms in figures["stages_ms"].values())
    assert "text sentiment" in stages.markdown(figures)
