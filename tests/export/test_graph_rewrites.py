"""Export-time graph rewrites of emotion2vec+ (toneserve.export.emotion2vec): the conv front end's and
position convs' ``TransposeLast, LayerNorm, TransposeLast`` become one ``ChannelLayerNorm`` over dim 1,
with fp32 parity to FunASR's modules, fewer Transposes in the ONNX graph and the same graph outputs;
and the node profiler (toneserve.export.node_profile) that measured them."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from toneserve.export.variants import run_onnx

e2v = pytest.importorskip("toneserve.export.emotion2vec")
fm = pytest.importorskip("funasr.models.emotion2vec.fairseq_modules")

TOL = 1e-5  # fp32 parity of the rewrite (observed ~1e-6)


def _randomise(norm: torch.nn.LayerNorm, seed: int) -> torch.nn.LayerNorm:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=g))
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=g))
    return norm


@pytest.mark.parametrize("channels,frames,affine", [
    (32, 300, True),  # the tiny preset's conv front end
    (512, 3000, True),  # base/large conv front end width (Fp32LayerNorm(512) with weight and bias)
    (768, 250, False),  # base position conv (LayerNorm(768, elementwise_affine=False))
])
def test_channel_layer_norm_equals_transposed_layer_norm(channels, frames, affine):
    cls = fm.Fp32LayerNorm if affine else torch.nn.LayerNorm
    norm = _randomise(cls(channels, elementwise_affine=affine), channels)
    original = torch.nn.Sequential(fm.TransposeLast(), norm, fm.TransposeLast()).eval()
    rewritten, n = e2v.channel_norm_rewrite(torch.nn.Sequential(original))
    assert n == 1 and isinstance(rewritten[0], e2v.ChannelLayerNorm)
    g = torch.Generator().manual_seed(7)
    # Conv outputs are not centred: an offset and a scale per channel make the mean/variance path matter.
    x = (3 * torch.randn(2, channels, frames, generator=g) * torch.rand(1, channels, 1, generator=g)
         + torch.randn(1, channels, 1, generator=g))
    with torch.no_grad():
        want, got = original(x), rewritten(x)
    assert got.shape == want.shape == x.shape
    assert float((got - want).abs().max()) < TOL


def test_rewrite_shares_parameters_and_leaves_funasr_model_alone():
    model = e2v.build_model("tiny", seed=0)
    enc = model.modality_encoders["AUDIO"]
    before = sum(isinstance(m, fm.TransposeLast) for m in model.modules())
    wrapper = e2v.Emotion2vecWrapper(model)
    # 7 conv layers + 5 position convs, one transposed norm each.
    assert wrapper.rewritten_norms == len(enc.local_encoder.conv_layers) + len(list(enc.relative_positional_encoder)[1:-1]) == 12
    assert not [m for m in list(wrapper.conv_blocks.modules()) + list(wrapper.pos_blocks.modules())
                if isinstance(m, fm.TransposeLast)]
    assert sum(isinstance(m, fm.TransposeLast) for m in model.modules()) == before
    first_norm = next(m for m in wrapper.conv_blocks.modules() if isinstance(m, e2v.ChannelLayerNorm))
    assert first_norm.norm.weight is enc.local_encoder.conv_layers[0][2][1].weight  # shared, not copied
    assert not e2v.Emotion2vecWrapper(model, channel_norm=False).rewritten_norms


def test_wrapper_with_and_without_rewrite_agree():
    model = e2v.build_model("tiny", seed=3)
    wav, lens = e2v.example_batch([16000, 9000, 12345, 401], seed=5)
    with torch.no_grad():
        a = e2v.Emotion2vecWrapper(model, channel_norm=False)(wav, lens)
        b = e2v.Emotion2vecWrapper(model)(wav, lens)
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) < TOL


@pytest.fixture(scope="module")
def both_graphs(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model exported as before the rewrite and with it (what export_onnx writes)."""
    out = tmp_path_factory.mktemp("rewrites")
    model = e2v.build_model("tiny", seed=0)
    plain, rewritten = out / "plain.onnx", out / "rewritten.onnx"
    e2v._export_to(e2v.Emotion2vecWrapper(model, channel_norm=False).eval(), plain)
    e2v._export_to(e2v.Emotion2vecWrapper(model).eval(), rewritten)
    return plain, rewritten


def _ops(path: Path) -> collections.Counter:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_exported_graph_drops_the_transposes(both_graphs):
    plain, rewritten = both_graphs
    before, after = _ops(plain)["Transpose"], _ops(rewritten)["Transpose"]
    # Two Transposes per rewritten norm (12) go; those of attention and the [B,C,T] <-> [B,T,C] hand-overs stay.
    assert before - after == 2 * 12, (before, after)
    assert after > 0


def test_exported_graphs_agree(both_graphs):
    plain, rewritten = both_graphs
    wav, lens = e2v.example_batch([16000, 9000, 12345], seed=11)
    feeds = {"wav": wav.numpy(), "wav_lens": lens.numpy()}
    a, b = run_onnx(plain, feeds), run_onnx(rewritten, feeds)
    assert list(a) == list(b) == list(e2v.EXPORT_OUTPUTS)
    for name in a:
        assert float(np.abs(a[name] - b[name]).max()) < TOL, name


def test_node_profile_reports_where_time_goes(both_graphs, capsys):
    pytest.importorskip("openvino")
    from toneserve.export import node_profile

    _, rewritten = both_graphs
    p = node_profile.profile(rewritten, seconds=0.5, precision="f32", threads=1, runs=1, warmup=1)
    assert p.total_ms > 0 and len(p.wall_ms) == 1
    assert "Convolution" in p.by_type
    assert abs(sum(p.by_node.values()) - p.total_ms) < 1e-6
    assert node_profile.main([str(rewritten), "--seconds", "0.5", "--runs", "1", "--threads", "1",
                              "--precision", "f32", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "Convolution" in text and "top 3 nodes" in text and "%" in text
    plain, _ = both_graphs
    assert node_profile.main([str(plain), "--compare", str(rewritten), "--seconds", "0.5", "--runs", "1",
                              "--threads", "1", "--precision", "f32"]) == 0
    table = capsys.readouterr().out.split("before: ")[1]
    row = next(line for line in table.splitlines() if line.startswith("| Transpose |"))
    assert len(row.split("|")) == 7 and "whole graph, median" in table


def test_node_profile_synthesises_inputs():
    from toneserve.export import node_profile

    wav = node_profile.synth_inputs([("wav", "f32", [None, None]), ("wav_lens", "i64", [None])], 2.0)
    assert wav["wav"].shape == (1, 32000) and wav["wav_lens"].tolist() == [32000]
    feats = node_profile.synth_inputs(
        [("speech", "f32", [None, None, 560]), ("speech_lengths", "i64", [None]), ("language", "i64", [None]),
         ("textnorm", "i64", [None])], 6.0)
    assert feats["speech"].shape == (1, 100, 560) and feats["speech_lengths"].tolist() == [100]
    assert feats["language"].tolist() == [0] == feats["textnorm"].tolist()
    with pytest.raises(ValueError):
        node_profile.synth_inputs([("speech", "f32", [None, None, 560])], 1.0, kind="wav")
