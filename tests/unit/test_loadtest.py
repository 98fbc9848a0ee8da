"""loadtest/ without a server: the corpus, traffic mixes, benchmark systems, the ledger, Triton's metrics
and what `toneserve plan` refuses."""
from __future__ import annotations

import os

import numpy as np
import pytest

from toneserve.loadtest import corpus, ledger, triton_metrics
from toneserve.loadtest.traffic import parse_mix


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
    from toneserve.loadtest.benchmark import gateway_args_of, parse_system, system_name, tuning_of
    from toneserve.model_repository.catalog import DEFAULT_TUNING

    runtime, precision, flags = parse_system("int8:instances=3,batch=1,pad=1.0")
    assert (runtime, precision) == ("auto", "int8") and flags == {"instances": 3, "batch": 1, "pad": 1.0}
    tuning = tuning_of(flags)
    assert (tuning.instances, tuning.intra_op_threads, tuning.max_pad_ratio) == (3, DEFAULT_TUNING.intra_op_threads, 1.0)
    assert tuning.batching.max_batch_size == 1 and tuning.batching.preferred_batch_sizes == ()
    assert tuning.batching.max_queue_delay_us == DEFAULT_TUNING.batching.max_queue_delay_us
    assert tuning_of({}) == DEFAULT_TUNING
    assert tuning_of(parse_system("fp32:share=1")[2]).share_cores is True
    assert tuning_of(parse_system("fp32:share=0")[2]).share_cores is False
    runtime, precision, flags = parse_system("ov-fp32:slots=64,cpu=8")  # the gateway's: the repository is the default
    assert flags == {"slots": 64, "cpu": 8} and tuning_of(flags) == DEFAULT_TUNING
    assert gateway_args_of(flags) == ["--max-triton-calls", "64", "--cpu-slots", "8"] and gateway_args_of({}) == []
    assert system_name("ov-fp32:slots=64,cpu=8") == "toneserve ov-fp32 slots64 cpu8"
    for bad in ("fp16", "ort-bf16", "tf-int8", "ov-", "-int8", "int8:instances=0", "int8:pad=0.5", "int8:threads=two",
                "int8:speed=9", "int8:share=yes", "int8:slots=0", "int8:cpu=x"):
        with pytest.raises(ValueError, match="--systems"):
            parse_system(bad)


def test_benchmark_system_names_say_the_runtime():
    from toneserve.loadtest.benchmark import parse_system, reference_system, system_name

    assert parse_system("ort-fp32") == ("onnxruntime", "fp32", {})
    assert parse_system("ov-bf16:instances=2") == ("openvino", "bf16", {"instances": 2})
    assert parse_system("ov-int8")[:2] == ("openvino", "int8") and parse_system("ov-fp32")[:2] == ("openvino", "fp32")
    assert parse_system("fp32")[:2] == ("auto", "fp32") and parse_system("bf16")[:2] == ("auto", "bf16")
    assert system_name("ov-bf16") == "toneserve ov-bf16" and system_name("int8") == "toneserve int8"
    assert system_name("ort-fp32:instances=2,threads=1") == "toneserve ort-fp32 2x2x1"
    systems = [{"name": n, "runtime": r, "precision": p} for n, r, p in
               [("a", "openvino", "fp32"), ("b", "openvino", "bf16"), ("c", "onnxruntime", "fp32"), ("d", "auto", "fp32")]]
    assert reference_system(systems)["name"] == "c"  # ort-fp32: the baseline's parity reference
    assert reference_system(systems[:2])["name"] == "a"
    with pytest.raises(ValueError, match="ort-fp32"):
        reference_system(systems[1:2])


def test_short_clip_corpus(tmp_path):
    from toneserve.gateway.audio import decode

    entries = corpus.generate_short(tmp_path / "short", 5, clip_seconds=2.0, rates=(8000, 16000),
                                    formats=("wav", "flac"), seed=3, progress=False)
    assert [e.file for e in corpus.load(tmp_path / "short")] == [e.file for e in entries]
    assert {e.format for e in entries} == {"wav", "flac"} and {e.rate for e in entries} == {8000, 16000}
    for entry in entries:
        assert 1.0 <= entry.seconds <= 3.0 and entry.channels == 1, entry
        (speaker, start, end), = entry.turns
        assert speaker == 0 and 0.1 <= start < end <= entry.seconds - 0.09, entry
        audio = decode(tmp_path / "short" / entry.file)
        assert abs(audio.seconds - entry.seconds) < 0.02, entry
        rate = 16000
        level = np.abs(audio.samples[0])
        assert level[:int(start * rate) - 160].max() < 1e-3  # silence before the turn
        assert level[int(start * rate):int(end * rate)].max() > 0.1  # speech in it
    again = corpus.generate_short(tmp_path / "again", 5, clip_seconds=2.0, rates=(8000, 16000),
                                  formats=("wav", "flac"), seed=3, progress=False)
    assert [(e.file, e.bytes, e.turns) for e in again] == [(e.file, e.bytes, e.turns) for e in entries]
    with pytest.raises(ValueError):
        corpus.plan_short(2, 0.2, [8000], ["wav"], 0)
    assert corpus.main(["--out", str(tmp_path / "cli"), "--short", "2", "--formats", "wav"]) == 0
    assert len(corpus.load(tmp_path / "cli")) == 2


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


def test_plan_refuses_what_it_cannot_measure(calls, tmp_path, capsys):
    from toneserve.cli import parser

    args = parser().parse_args(["plan", "--slo-p95-ms", "1000", "--corpus", str(calls), "--triton-metrics",
                                "127.0.0.1:1", "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "no Triton metrics at http://127.0.0.1:1/metrics" in capsys.readouterr().err


def test_plan_counts_replicas_per_host_by_cores_and_by_memory():
    """A host holds as many replicas as its cores and its memory both allow; the plan says which limits it."""
    from toneserve.loadtest.plan import decide, replicas_per_host

    host = {"cores": 16, "memory_mib": 32 * 1024, "replica_cores": 2, "headroom": 0.25}
    assert replicas_per_host(host, None) == (8, "cpu")  # memory unmeasured: cores alone
    assert replicas_per_host(host, 3000.0) == (8, "cpu")  # 8 x 3750 MiB fit in 32 GiB
    assert replicas_per_host(host, 7000.0) == (3, "memory")  # 32768 // 8750
    assert replicas_per_host({**host, "memory_mib": 4096}, 7000.0) == (0, "memory")

    def step(users, p95, rtfx, rss):
        return {"users": users, "meets_slo": p95 <= 1000, "run": {"p95": p95, "gateway_rtfx": rtfx, "rtfx": rtfx},
                "rss_mb": {"gateway": 300.0, "tritonserver": rss}}

    steps = [step(1, 500, 5.0, 6000.0), step(2, 800, 8.0, 6700.0), step(4, 1500, 9.0, 7200.0)]
    decision = decide(steps, 1000, 10000, host)
    # The chosen step is the second; the replica's memory is its peak over every step run (7500 MB).
    assert decision["users"] == 2 and decision["replica_rss_mb"] == 7500.0
    assert (decision["replicas_per_host"], decision["limited_by"]) == (3, "memory")
    assert decision["streams_per_host"] == 24.0 and decision["hosts"] == 417
    # Without a host description a host is the replica measured.
    assert decide(steps, 1000, 10000)["streams_per_host"] == 8.0


def test_benchmark_ratios_are_medians_of_runs_paired_by_repetition():
    """Each repetition runs every system once: a ratio pairs the system's run with the baseline's of the same
    repetition, and the figure is the median of those, with their range."""
    from toneserve.loadtest.benchmark import ratios, spread

    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([4.0, 1.0])["median"] == 2.5

    def run(system, rep, rtfx, p95):
        return {"system": system, "users": 4, "rep": rep, "run": {"rtfx": rtfx, "p95": p95}}

    # The machine slowed down in repetition 1: both sides moved, the paired ratio did not.
    runs = [run("baseline", 0, 5.0, 100.0), run("toneserve", 0, 10.0, 50.0),
            run("baseline", 1, 2.5, 200.0), run("toneserve", 1, 5.0, 100.0),
            run("baseline", 2, 5.0, 100.0), run("toneserve", 2, 11.0, 60.0)]
    (ratio,) = ratios(runs, ["toneserve"], [4])
    assert ratio["reps"] == 3 and ratio["throughput"] == 2.0
    assert (ratio["throughput_range"]["min"], ratio["throughput_range"]["max"]) == (2.0, 2.2)
    assert ratio["p95"] == 0.5
    assert ratios(runs, ["toneserve"], [8]) == []  # no runs at that load


def test_soak_growth_is_judged_on_the_window_only():
    from toneserve.loadtest.soak import growth

    samples = [{"t_s": t, "total": v} for t, v in ((0, 100.0), (60, 200.0), (120, 200.0), (180, 210.0))]
    judged = growth(samples, 120)  # from 60 s: 200 -> 210 MB, the warm-up's doubling left out
    assert (judged["from_mb"], judged["to_mb"], judged["growth"]) == (200.0, 210.0, 0.05)
    assert judged["slope_mb_per_min"] == 5.0
    assert growth([], 60)["growth"] is None


def test_memory_of_a_process_tree_by_part_with_its_proportional_set_size():
    """This process and a child: RSS, its anonymous part and PSS per part; PSS counts the pages the two share
    (the interpreter, its libraries) once, so it stays at or below RSS."""
    import subprocess
    import sys

    from toneserve.loadtest.process_cpu import memory_mb

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        plain = memory_mb(os.getpid(), "test")
        full = memory_mb(os.getpid(), "test", pss=True)
    finally:
        child.kill()
        child.wait()
    assert set(plain) == {"rss", "anon"} and set(full) == {"rss", "anon", "pss"}
    for part, rss in full["rss"].items():
        assert 0 < full["anon"][part] <= rss and 0 < full["pss"][part] <= rss
