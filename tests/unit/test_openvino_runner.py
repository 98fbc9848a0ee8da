"""The OpenVINO runner in-process (fake pb_utils) on a small graph built with OpenVINO's own opset (the unit
tier has no ONNX exporter): batched requests of different lengths answer exactly what each answers alone
(zero padding is exact, outputs are trimmed), compile properties follow the parameters, and the compiled
model is cached on disk. Parity with ONNX Runtime on the exported graphs: tests/export/test_openvino_runner.py."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from tests.runner_harness import answers, load_runner, outputs

ov = pytest.importorskip("openvino")


def masked_graph(path):
    """x [B, T] f32, lens [B] i64 -> total [B] (sum of x[b, :lens[b]]), scaled [B, T] (3 x, zero past lens),
    out_lens [B] (= lens): a graph whose answer padding would change if the lengths were ignored."""
    from openvino import opset13 as op

    x = op.parameter([-1, -1], np.float32, name="x")
    lens = op.parameter([-1], np.int64, name="lens")
    steps = op.gather(op.shape_of(x, "i64"), op.constant(np.int64(1)), op.constant(np.int64(0)))
    t = op.range(op.constant(np.int64(0)), steps, op.constant(np.int64(1)), "i64")
    mask = op.convert(op.less(op.unsqueeze(t, op.constant(np.int64(0))),
                              op.unsqueeze(lens, op.constant(np.int64(1)))), "f32")
    masked = op.multiply(x, mask)
    total = op.reduce_sum(masked, op.constant(np.int64(1)))
    scaled = op.multiply(masked, op.constant(np.float32(3.0)))
    out_lens = op.add(lens, op.constant(np.int64(0)))
    for node, name in ((total, "total"), (scaled, "scaled"), (out_lens, "out_lens")):
        node.output(0).get_tensor().set_names({name})
    ov.save_model(ov.Model([total, scaled, out_lens], [x, lens]), str(path), compress_to_fp16=False)
    return path


def config(**parameters) -> dict:
    return {"name": "masked", "parameters": {k: {"string_value": v} for k, v in parameters.items()},
            "input": [{"name": "x", "dims": [-1]}, {"name": "lens", "dims": [1]}],
            "output": [{"name": "total", "dims": [1]}, {"name": "scaled", "dims": [-1]},
                       {"name": "out_lens", "dims": [1]}]}


@pytest.fixture
def graph(tmp_path):
    return masked_graph(tmp_path / "graph" / "masked.xml")


@pytest.fixture(params=["1", "2"], ids=["1 stream", "2 streams"])
def runner(graph, tmp_path, monkeypatch, request):
    """The runner on one stream, and on two (a batch's runs computing at once on one compiled model)."""
    return load_runner(monkeypatch, tmp_path / "masked", "openvino_runner.py",
                       {"model.xml": graph, "model.bin": graph.with_suffix(".bin")},
                       config(graph_file="model.xml", inference_precision="f32", intra_op_threads="1",
                              trim=json.dumps({"scaled": ["out_lens", 1]}), max_pad_ratio="inf",
                              streams=request.param))


def request(pb, x):
    return pb.Request(x=x[None], lens=np.array([[len(x)]], np.int64))


def test_a_batch_answers_what_each_request_answers_alone(runner):
    model, pb = runner
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (5, 17, 9, 1)]
    alone = [outputs(answers(model, [request(pb, c)])[0]) for c in clips]
    batched = [outputs(r) for r in answers(model, [request(pb, c) for c in clips])]
    for clip, one, many in zip(clips, alone, batched):
        assert many["scaled"].shape == (1, len(clip))  # trimmed back to the request's own length
        assert many["total"].shape == (1, 1) and many["out_lens"].tolist() == [[len(clip)]]
        for name in one:
            # Padding is exact; only the summation order of a longer padded row may move the last bit.
            np.testing.assert_allclose(many[name], one[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(many["scaled"], one["scaled"])  # no reduction: bit for bit
        np.testing.assert_allclose(one["total"][0, 0], clip.sum(), rtol=1e-5)
        np.testing.assert_allclose(one["scaled"][0], 3 * clip, rtol=1e-6)


def test_a_cancelled_request_is_not_run_and_a_bad_one_is_answered_an_error(runner):
    model, pb = runner
    clip = np.ones(4, np.float32)
    responses = answers(model, [request(pb, clip), pb.Request(cancelled=True, x=clip[None], lens=np.array([[4]]))])
    assert outputs(responses[0])["total"].tolist() == [[4.0]]
    assert responses[1].error.code == "CANCELLED"
    (bad,) = answers(model, [pb.Request(x=clip[None])])  # no lens: an error response, not a crashed instance
    assert bad.error is not None and bad.output_tensors == []


def test_the_compiled_model_is_cached_in_the_version_folder(runner, tmp_path):
    model, _ = runner
    cache = tmp_path / "masked" / "1" / "ov_cache"
    streams = model.batches.streams
    # The streams of one compiled model, intra_op_threads (1) each.
    assert model.compiled.get_property("NUM_STREAMS") == streams
    assert model.compiled.get_property("INFERENCE_NUM_THREADS") == streams
    # unpinned: pinned, every stub process pins its thread to the same first core
    assert model.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert any(p.is_file() for p in cache.rglob("*")), f"no compiled model cached in {cache}"


def test_an_unwritable_cache_dir_falls_back_to_a_temporary_one(graph, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        target = "/proc/toneserve-cache"  # root writes anywhere else
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "cache")
    model, pb = load_runner(monkeypatch, tmp_path / "fallback", "openvino_runner.py",
                            {"model.xml": graph, "model.bin": graph.with_suffix(".bin")},
                            config(graph_file="model.xml", cache_dir=target))
    assert outputs(answers(model, [request(pb, np.ones(3, np.float32))])[0])["total"].tolist() == [[3.0]]


def test_compile_config_reaches_openvino(graph, tmp_path, monkeypatch):
    model, _ = load_runner(monkeypatch, tmp_path / "configured", "openvino_runner.py",
                           {"model.xml": graph, "model.bin": graph.with_suffix(".bin")},
                           config(graph_file="model.xml", intra_op_threads="2",
                                  compile_config=json.dumps({"PERFORMANCE_HINT": "THROUGHPUT"})))
    assert str(model.compiled.get_property("PERFORMANCE_HINT")) in ("THROUGHPUT", "PerformanceMode.THROUGHPUT")
    assert model.compiled.get_property("INFERENCE_NUM_THREADS") == 2


def test_graph_outputs_the_config_does_not_serve_are_left_out(graph, tmp_path, monkeypatch):
    """emotion2vec+'s graph computes probs beside its logits; a model serves what its config lists."""
    served = config(graph_file="model.xml")
    served["output"] = [o for o in served["output"] if o["name"] != "total"]
    model, pb = load_runner(monkeypatch, tmp_path / "fewer", "openvino_runner.py",
                            {"model.xml": graph, "model.bin": graph.with_suffix(".bin")}, served)
    assert set(outputs(answers(model, [request(pb, np.ones(3, np.float32))])[0])) == {"scaled", "out_lens"}


def test_runs_of_a_batch_are_cut_to_keep_every_stream_busy_and_never_pad_more(runner):
    """split_runs halves the run of the most requests until each stream has one, where the requests allow; a
    part of a length group never pads more than the group did."""
    split_runs = sys.modules["batch_io"].split_runs  # as the runner imported it, beside its fake pb_utils

    assert split_runs([[0, 1, 2, 3]], 2) == [[0, 1], [2, 3]]
    assert split_runs([[0, 1, 2]], 4) == [[0], [1], [2]]
    assert split_runs([[0], [1, 2, 3, 4, 5]], 3) == [[0], [1, 2, 3], [4, 5]]
    assert split_runs([[0], [1]], 2) == [[0], [1]]  # enough runs already
    assert split_runs([[0]], 2) == [[0]]  # one request cannot be cut
    for groups, streams in (([[0, 1, 2, 3, 4, 5, 6]], 2), ([[0, 1], [2, 3, 4]], 4)):
        runs = split_runs(groups, streams)
        assert sorted(i for run in runs for i in run) == sorted(i for group in groups for i in group)
        assert all(any(set(run) <= set(group) for group in groups) for run in runs)


def test_no_run_pads_more_than_max_run_volume(runner):
    """cap_runs cuts a length group where one more item would take the run's padded size (items times its
    largest item) over the cap; an item over the cap runs alone; nothing is lost or reordered."""
    cap_runs = sys.modules["batch_io"].cap_runs
    volume = [10, 10, 12, 30, 100]
    assert cap_runs([[0, 1, 2, 3]], volume, 36) == [[0, 1, 2], [3]]
    assert cap_runs([[0, 1], [4]], volume, 36) == [[0, 1], [4]]  # 100 > 36: alone
    assert cap_runs([[0, 1, 2, 3, 4]], volume, float("inf")) == [[0, 1, 2, 3, 4]]
    for cap in (1, 20, 24, 25, 60, 500):
        runs = cap_runs([[0, 1, 2], [3, 4]], volume, cap)
        assert [i for run in runs for i in run] == [0, 1, 2, 3, 4]
        assert all(len(run) == 1 or len(run) * max(volume[i] for i in run) <= cap for run in runs)


def test_a_capped_batch_answers_what_each_request_answers_alone(graph, tmp_path, monkeypatch):
    """With runs capped at 20 elements, four clips of 5-17 samples run in several runs; each request is
    answered what it is answered alone."""
    model, pb = load_runner(monkeypatch, tmp_path / "capped", "openvino_runner.py",
                            {"model.xml": graph, "model.bin": graph.with_suffix(".bin")},
                            config(graph_file="model.xml", trim=json.dumps({"scaled": ["out_lens", 1]}),
                                   max_pad_ratio="inf", max_run_volume="20", streams="2"))
    started = []
    start = model.batches.start
    model.batches.start = lambda feed, done: (started.append(feed["x"].shape), start(feed, done))
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (5, 17, 9, 6)]
    batched = [outputs(r) for r in answers(model, [request(pb, c) for c in clips])]
    # One length group (5, 6, 9, 17) cut where the next item would pad it over 20: (5, 6) | 9 | 17.
    assert sorted(started) == [(1, 9), (1, 17), (2, 6)]
    for clip, many in zip(clips, batched):
        np.testing.assert_array_equal(many["scaled"][0], 3 * clip)
        np.testing.assert_allclose(many["total"][0, 0], clip.sum(), rtol=1e-5)
