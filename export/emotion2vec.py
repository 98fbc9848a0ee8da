"""emotion2vec+ exporter: FunASR ``Emotion2vec`` -> lengths-aware ONNX (``toneserve.export.emotion2vec``).

What is here
------------
* ``PRESETS`` / ``UNCONFIRMED``: the architecture configs (``toneserve.export.presets``).
* ``build_model(preset, seed)``: the real FunASR class (``tables.model_classes["Emotion2vec"]``,
  what ``AutoModel`` instantiates for ``iic/emotion2vec_plus_*``) with random weights, eval mode.
* ``Emotion2vecWrapper``: ``(wav[B,S] f32, wav_lens[B] i64) -> (logits[B,9] f32, embedding[B,D] f32)``
  that gives a padded batch the same answer as unbatched FunASR inference (the exported graph adds
  ``probs[B,9]`` = softmax(logits)).
* ``export_onnx(out_dir, preset, seed, loaded=None, source=None)``: writes ``model.onnx``,
  ``tokens.txt``, ``manifest.json`` atomically and returns the manifest; random weights of
  ``preset``, or a model folder's own weights and tokens as the family loaded them
  (``toneserve.export.families.emotion2vec``).

Why a wrapper
-------------
FunASR's own export takes no lengths and returns frame features; its ``padding_mask`` path lets
padding leak into valid frames through the stack of position convolutions. Here every step that
mixes information along time is made length-aware:

1. per-utterance normalisation over valid samples only (FunASR: ``F.layer_norm(wav, wav.shape)``);
2. conv front end (no padding, so valid frames only ever see valid samples), valid frame count
   per item from the conv kernels/strides;
3. padded frames zeroed before *each* position conv (equals the zero padding an unpadded
   sequence sees at its end);
4. padded keys masked out of attention (-inf before softmax);
5. mean pool over valid frames, then ``proj``.

Graph rewrites at export (not in FunASR)
----------------------------------------
* Every ``TransposeLast, LayerNorm, TransposeLast`` of the conv front end (7 conv layers on up to
  16,000 frames x 512 channels) and of the position convs becomes ``ChannelLayerNorm``: the same
  normalisation taken over dim 1 of ``[B, C, T]`` directly, so the graph carries no Transpose pair
  around them (fp32 parity with FunASR's module ~1e-6, tested).
* The exported graph also gives ``probs = softmax(logits)`` (``EXPORT_OUTPUTS``), so serving needs
  no separate softmax step. ``Emotion2vecWrapper`` itself still returns ``(logits, embedding)``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_bytes, sha256_file, versions
from toneserve.export.emotion2vec_tokens import EXPECTED_LABELS, REAL_TOKENS, read_labels, read_tokens, token_to_label
from toneserve.export.errors import SourceError
from toneserve.export.family import LoadedModel, Manifest, Parity, Tensor, loaded_weights_entry, source_entry
from toneserve.export.loading import model_class
from toneserve.export.variants import run_onnx

# funasr is imported inside the functions that use it: importing it takes seconds and prints notices.

SAMPLE_RATE = 16000
OPSET = 18
FUNASR_MODULE = "funasr.models.emotion2vec.model"  # importing it registers the class

PRESETS = presets.EMOTION2VEC
UNCONFIRMED = presets.EMOTION2VEC_UNCONFIRMED
UNCONFIRMED_LOADED = presets.EMOTION2VEC_UNCONFIRMED_LOADED
_DECODER_BASE = presets._DECODER_BASE


def preset_config(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown emotion2vec preset {preset!r}; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[preset])


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _emotion2vec_class():
    return model_class("Emotion2vec", FUNASR_MODULE)


@torch.no_grad()
def _randomize_constants(model: nn.Module, gen: torch.Generator) -> None:
    """Give constant-initialised parameters (LayerNorm weight=1/bias=0, zero extra tokens, ALiBi
    scale=1, zero biases) seeded random values, so that a test would notice a wrapper that skips
    one of them. ALiBi scales stay positive (FunASR clamps them at 0)."""
    for name, p in model.named_parameters():
        if p.numel() > 1 and float(p.detach().std()) > 0:
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if name.endswith("alibi_scale"):
            p.copy_(0.5 + torch.rand(p.shape, generator=gen, dtype=p.dtype))
        else:
            p.add_(0.1 * noise)


def build_from_config(model_conf: dict, seed: int = 0, vocab_size: int = len(REAL_TOKENS)) -> nn.Module:
    """FunASR ``Emotion2vec`` from a ``model_conf`` dict (e.g. a preset, or ``model_conf`` of a
    local config.yaml) with seeded random weights, in eval mode; global RNG state untouched."""
    cls = _emotion2vec_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Same kwargs shape as AutoModel.build_model: model_conf nested + vocab_size from the
        # tokenizer's token list.
        model = cls(model_conf=copy.deepcopy(model_conf), vocab_size=vocab_size)
    _randomize_constants(model, torch.Generator().manual_seed(seed + 1))
    model.eval()
    return model


def build_model(preset: str, seed: int = 0, vocab_size: int | None = None) -> nn.Module:
    """FunASR ``Emotion2vec`` (the class AutoModel builds for iic/emotion2vec_plus_*) with
    random weights, in eval mode. Deterministic for a given ``(preset, seed)``; leaves the
    global torch RNG state untouched."""
    model = build_from_config(preset_config(preset), seed, vocab_size or len(REAL_TOKENS))
    model.toneserve_preset = preset  # type: ignore[attr-defined]
    return model


def conv_frames(num_samples, spec: Sequence[Sequence[int]]):
    """Frames the conv front end produces for ``num_samples`` (int or int64 tensor): FunASR's
    ``get_feat_extract_output_lengths`` (``floor((n - k) / s + 1)`` per layer)."""
    n = num_samples
    for _, k, s in spec:
        n = (n - k) // s + 1
    return n


def samples_for_frames(frames: int, spec: Sequence[Sequence[int]]) -> int:
    """Fewest samples that give ``frames`` frames."""
    n = frames
    for _, k, s in reversed(list(spec)):
        n = (n - 1) * s + k
    return n


def min_samples(spec: Sequence[Sequence[int]]) -> int:
    """Fewest samples that give one frame (the front end's receptive field: 400 = 25 ms)."""
    return samples_for_frames(1, spec)


# --------------------------------------------------------------------------------------------
# Reference: FunASR's own inference for one unpadded utterance
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Channel layer norm (export-time rewrite of TransposeLast + LayerNorm + TransposeLast)
# --------------------------------------------------------------------------------------------


class ChannelLayerNorm(nn.Module):
    """``TransposeLast, LayerNorm(C), TransposeLast`` on ``[B, C, T]`` without the transposes: mean and
    biased variance over dim 1, weight/bias broadcast as ``[C, 1]``, computed in fp32 and cast back like
    FunASR's ``Fp32LayerNorm``. Holds the original ``LayerNorm`` module, so parameters are shared, not
    copied. Decomposed (ReduceMean/Sub/Pow/Sqrt/Div) because ONNX LayerNormalization only normalises
    trailing axes. OpenVINO's CPU plugin runs it as those nodes (its MVN kernel does not take the channel axis
    alone of a 3-D tensor), which still costs far less than the two Transposes did (docs/BENCHMARKS.md)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        if not isinstance(norm, nn.LayerNorm) or len(norm.normalized_shape) != 1:
            raise ValueError(f"expected a LayerNorm over one dim, got {norm!r}")
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean = xf.mean(dim=1, keepdim=True)
        d = xf - mean
        var = d.pow(2).mean(dim=1, keepdim=True)
        y = d / torch.sqrt(var + self.norm.eps)
        if self.norm.weight is not None:
            y = y * self.norm.weight.float().unsqueeze(-1)
        if self.norm.bias is not None:
            y = y + self.norm.bias.float().unsqueeze(-1)
        return y.type_as(x)


def _is_transpose_last(m: nn.Module) -> bool:
    from funasr.models.emotion2vec.fairseq_modules import TransposeLast  # type: ignore[import-untyped]

    return isinstance(m, TransposeLast) and m.deconstruct_idx is None


def _is_channel_norm_triple(mods: Sequence[nn.Module]) -> bool:
    return (len(mods) == 3 and _is_transpose_last(mods[0]) and _is_transpose_last(mods[2])
            and isinstance(mods[1], nn.LayerNorm) and len(mods[1].normalized_shape) == 1)


def channel_norm_rewrite(seq: nn.Sequential) -> tuple[nn.Sequential, int]:
    """A new ``nn.Sequential`` sharing ``seq``'s modules in which every ``TransposeLast, LayerNorm,
    TransposeLast`` (as three consecutive children, or as one child ``Sequential`` of exactly those) is one
    ``ChannelLayerNorm``; nested ``Sequential`` children are rewritten too. Returns it and the number of
    norms rewritten. ``seq`` itself is left as it was (the FunASR model is not modified)."""
    children = list(seq.children())
    out: list[nn.Module] = []
    count = 0
    i = 0
    while i < len(children):
        m = children[i]
        if _is_channel_norm_triple(children[i:i + 3]):
            out.append(ChannelLayerNorm(children[i + 1]))
            count += 1
            i += 3
            continue
        if isinstance(m, nn.Sequential):
            if _is_channel_norm_triple(list(m.children())):
                out.append(ChannelLayerNorm(list(m.children())[1]))
                count += 1
            else:
                sub, n = channel_norm_rewrite(m)
                out.append(sub)
                count += n
        else:
            out.append(m)
        i += 1
    return nn.Sequential(*out), count


# --------------------------------------------------------------------------------------------
# Lengths-aware wrapper
# --------------------------------------------------------------------------------------------


class Emotion2vecWrapper(nn.Module):
    """``forward(wav[B,S] f32, wav_lens[B] i64) -> (logits[B,C] f32, embedding[B,D] f32)``.

    Runs the wrapped FunASR model's own submodules (conv front end, feature projection,
    position-conv blocks, transformer blocks' linear/norm/MLP layers, ``proj``) and equals
    FunASR's own ``Emotion2vec.inference`` (before its softmax) on each unpadded item.
    Transformer blocks are re-stated here (same operations, same order as
    ``AltBlock``/``AltAttention``) only to replace FunASR's data-dependent
    ``if padding_mask.any()`` and per-item ALiBi copies by one additive bias and a key mask,
    which both ONNX exporters handle. ``wav_lens`` is clamped to ``[0, S]``; an item
    shorter than ``min_samples`` (400) is given one frame so the output stays finite, but such
    input is not meaningful and should be rejected upstream.

    ``channel_norm`` (default): the conv front end's and position convs' transposed layer norms run as
    ``ChannelLayerNorm`` (see the module docstring); False runs FunASR's modules as they are.
    """

    def __init__(self, model: nn.Module, channel_norm: bool = True):
        super().__init__()
        if model.training:
            raise ValueError("wrap a model in eval mode")
        self.model = model
        enc = model.modality_encoders["AUDIO"]
        mcfg = enc.modality_cfg
        if mcfg.extractor_mode != "layer_norm":
            # 'default' puts a GroupNorm over time in the first conv layer: padding would leak.
            raise NotImplementedError(f"extractor_mode {mcfg.extractor_mode!r} is not supported")
        if enc.fixed_positional_encoder is not None:
            raise NotImplementedError("fixed positional encoder is not supported")
        for blk in self._all_blocks():
            if blk.attn.cosine_attention:
                raise NotImplementedError("cosine attention is not supported")
        if model.proj is None:
            raise ValueError("model has no proj head (vocab_size <= 0)")

        self.spec = [tuple(int(v) for v in layer) for layer in enc.feature_enc_layers]
        self.normalize = bool(model.cfg.get("normalize", False))
        self.num_extra = int(mcfg.num_extra_tokens)
        self.num_heads = int(model.blocks[0].attn.num_heads) if len(model.blocks) else int(
            enc.context_encoder.blocks[0].attn.num_heads)
        self.embed_dim = int(model.cfg.get("embed_dim"))
        self.num_classes = int(model.proj.out_features)

        self.use_alibi = enc.get_alibi_bias is not None
        if self.use_alibi:
            if mcfg.learned_alibi:
                raise NotImplementedError("learned ALiBi tables are not supported")
            from funasr.models.emotion2vec.base import get_alibi

            heads_a = int(mcfg.num_alibi_heads)
            if heads_a > self.num_heads:
                raise ValueError("num_alibi_heads > num_heads")
            # FunASR's own slopes: get_alibi(2, H)[h, 0, 1] == slope_h * (-1).
            slopes = -get_alibi(2, heads_a)[:, 0, 1].to(torch.float32)
            self.register_buffer("alibi_slopes", slopes.view(1, heads_a, 1, 1), persistent=False)
            self.alibi_pad_heads = self.num_heads - heads_a

        # The conv front end and position convs as run here: FunASR's modules, or (channel_norm) new
        # Sequentials sharing them with the transposed layer norms rewritten.
        self.channel_norm = bool(channel_norm)
        conv_layers = list(enc.local_encoder.conv_layers)
        pos = list(enc.relative_positional_encoder)
        self.pos_pre_ln = pos[0] if enc.modality_cfg.conv_pos_pre_ln else None
        pos_inner = list(pos[1])[1:-1] if self.pos_pre_ln is not None else pos[1:-1]  # drop the outer pair
        self.rewritten_norms = 0
        if self.channel_norm:
            pairs = [channel_norm_rewrite(b) for b in conv_layers + pos_inner]
            self.rewritten_norms = sum(n for _, n in pairs)
            conv_layers = [b for b, _ in pairs[:len(conv_layers)]]
            pos_inner = [b for b, _ in pairs[len(conv_layers):]]
        self.conv_blocks = nn.ModuleList(conv_layers)
        self.pos_blocks = nn.ModuleList(pos_inner)

    # -- pieces ---------------------------------------------------------------------------

    def _all_blocks(self):
        enc = self.model.modality_encoders["AUDIO"]
        return list(enc.context_encoder.blocks) + list(self.model.blocks)

    def _normalise(self, wav: torch.Tensor, smask: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), dtype=wav.dtype, device=wav.device)
        x = torch.where(smask, wav, zero)
        if not self.normalize:
            return x
        # F.layer_norm(wav, wav.shape) over valid samples only (biased variance, eps 1e-5).
        n = lens.clamp(min=1).to(wav.dtype).unsqueeze(1)
        mean = x.sum(dim=1, keepdim=True) / n
        d = torch.where(smask, x - mean, zero)
        var = (d * d).sum(dim=1, keepdim=True) / n
        return d / torch.sqrt(var + 1e-5)

    def _alibi(self, n_frames: torch.Tensor | int, device) -> torch.Tensor | None:
        """[1, H, N, N] bias (extra-token rows/cols zero) with FunASR's values, scaled by the
        clamped learned scale when that scale is shared by all layers (FunASR folds it in)."""
        if not self.use_alibi:
            return None
        enc = self.model.modality_encoders["AUDIO"]
        pos = torch.arange(n_frames, device=device)
        pos_bias = torch.abs(pos.unsqueeze(0) - pos.unsqueeze(1)) * -1  # int64, as FunASR
        bias = self.alibi_slopes * pos_bias.unsqueeze(0).to(torch.float32)
        scale = enc.alibi_scale
        if scale is not None and scale.size(0) == 1:
            bias = bias * scale.clamp_min(0).squeeze(0).type_as(bias)
        if self.num_extra > 0:
            bias = F.pad(bias, (self.num_extra, 0, self.num_extra, 0))
        if self.alibi_pad_heads:
            bias = F.pad(bias, (0, 0, 0, 0, 0, self.alibi_pad_heads))
        return bias

    def _layer_scales(self) -> list[torch.Tensor | None]:
        """Per-block ALiBi scale when the learned scale is per layer, else None per block."""
        enc = self.model.modality_encoders["AUDIO"]
        blocks = self._all_blocks()
        scale = enc.alibi_scale
        if not self.use_alibi or scale is None or scale.size(0) == 1:
            return [None] * len(blocks)
        scale = scale.clamp_min(0)
        out = []
        for i in range(len(blocks)):
            s = scale[i]  # [1, Ha, 1, 1]
            if self.alibi_pad_heads:
                s = F.pad(s, (0, 0, 0, 0, 0, self.alibi_pad_heads))
            out.append(s)
        return out

    @staticmethod
    def _attention(attn: nn.Module, x: torch.Tensor, bias, key_valid: torch.Tensor) -> torch.Tensor:
        # AltAttention.forward (non-cosine) with padding handled by key_valid [B,1,1,N].
        B, N, C = x.shape
        H = attn.num_heads
        qkv = attn.qkv(x).reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * attn.scale
        a = q @ k.transpose(-2, -1)
        if bias is not None:
            a = a + bias
        a = a.masked_fill(~key_valid, float("-inf"))
        a = a.softmax(dim=-1, dtype=torch.float32).to(dtype=q.dtype)
        y = (a @ v).transpose(1, 2).reshape(B, N, C)
        return attn.proj(y)

    def _block(self, blk: nn.Module, x: torch.Tensor, bias, key_valid: torch.Tensor) -> torch.Tensor:
        # AltBlock.forward in eval (drop_path / dropouts are identities).
        if blk.layer_norm_first:
            x = x + self._attention(blk.attn, blk.norm1(x), bias, key_valid)
            r = x = blk.mlp(blk.norm2(x))
            return r + x  # sic: FunASR/data2vec adds the MLP output to itself here
        x = x + self._attention(blk.attn, x, bias, key_valid)
        r = x = blk.norm1(x)
        x = blk.mlp(x)
        return blk.norm2(r + x)

    def _position_convs(self, x: torch.Tensor, fvalid: torch.Tensor) -> torch.Tensor:
        """relative_positional_encoder with padded frames zeroed before each conv."""
        if self.pos_pre_ln is not None:
            x = self.pos_pre_ln(x)
        h = x.transpose(1, 2)  # [B, D, T]
        m = fvalid.unsqueeze(1)  # [B, 1, T]
        zero = torch.zeros((), dtype=h.dtype, device=h.device)
        for blk in self.pos_blocks:
            h = torch.where(m, h, zero)
            h = blk(h)
        return h.transpose(1, 2)

    # -- forward --------------------------------------------------------------------------

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor):
        model = self.model
        enc = model.modality_encoders["AUDIO"]
        S = wav.shape[1]
        lens = torch.clamp(wav_lens.to(torch.int64), min=0, max=S)
        smask = torch.arange(S, device=wav.device).unsqueeze(0) < lens.unsqueeze(1)

        x = self._normalise(wav, smask, lens)
        x = x.unsqueeze(1)  # ConvFeatureExtractionModel.forward: [B, S] -> [B, 1, S] -> conv layers
        for blk in self.conv_blocks:
            x = blk(x)  # [B, C, T]
        x = enc.project_features(x)  # [B, T, D]
        T = x.shape[1]
        n_frames = torch.clamp(conv_frames(lens, self.spec), min=1)
        n_frames = torch.minimum(n_frames, torch.full_like(n_frames, T))
        fvalid = torch.arange(T, device=x.device).unsqueeze(0) < n_frames.unsqueeze(1)  # [B, T]

        x = x + self._position_convs(x, fvalid)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        x = torch.where(fvalid.unsqueeze(-1), x, zero)

        B = x.shape[0]
        if self.num_extra > 0:
            x = torch.cat([enc.extra_tokens.expand(B, -1, -1), x], dim=1)
            kvalid = torch.cat(
                [torch.ones(B, self.num_extra, dtype=torch.bool, device=x.device), fvalid], dim=1)
        else:
            kvalid = fvalid
        key_valid = kvalid.unsqueeze(1).unsqueeze(2)  # [B, 1, 1, N]
        bias = self._alibi(T, x.device)
        scales = self._layer_scales()

        ce = enc.context_encoder
        if ce.norm is not None and not ce.layer_norm_first:
            x = ce.norm(x)
        blocks = self._all_blocks()
        n_pre = len(ce.blocks)
        for i, blk in enumerate(blocks):
            if i == n_pre and ce.norm is not None and ce.layer_norm_first:
                x = ce.norm(x)
            b = bias if (bias is None or scales[i] is None) else bias * scales[i].type_as(bias)
            x = self._block(blk, x, b, key_valid)
        if n_pre == len(blocks) and ce.norm is not None and ce.layer_norm_first:
            x = ce.norm(x)
        if model.norm is not None:
            x = model.norm(x)

        x = x[:, self.num_extra:]
        x = torch.where(fvalid.unsqueeze(-1), x, zero)
        embedding = x.sum(dim=1) / n_frames.to(x.dtype).unsqueeze(1)
        logits = model.proj(embedding)
        return logits, embedding


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


EXPORT_OUTPUTS = ("logits", "embedding", "probs")
PROBS_OUTPUT = "probs"


class _ExportGraph(nn.Module):
    """What is exported: the wrapper's ``(logits, embedding)`` and ``probs = softmax(logits)`` (fp32), so
    the serving ensemble needs no separate softmax model."""

    def __init__(self, wrapper: Emotion2vecWrapper):
        super().__init__()
        self.wrapper = wrapper
        self.spec = wrapper.spec

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor):
        logits, embedding = self.wrapper(wav, wav_lens)
        return logits, embedding, torch.softmax(logits.float(), dim=-1)


def example_batch(lengths: Sequence[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic padded batch of noise + sines (used for export tracing and parity)."""
    rng = np.random.default_rng(seed)
    S = max(lengths)
    wav = np.zeros((len(lengths), S), dtype=np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / SAMPLE_RATE
        f0 = 110.0 * (i + 1)
        sig = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3.1 * f0 * t)
        wav[i, :n] = sig + 0.05 * rng.standard_normal(n)
    return torch.from_numpy(wav), torch.tensor(list(lengths), dtype=torch.int64)


def _export_to(wrapper: Emotion2vecWrapper, path: Path) -> None:
    """Exporter choice: ``dynamo=True`` (torch.export + onnxscript), explicitly.

    Both exporters were tried on torch 2.13 and both meet the parity gate (max abs error vs
    the torch wrapper ~1e-6). dynamo=True is chosen because torch.export traces with symbolic
    batch/sample sizes and checks its shape guards against the declared ranges, whereas the
    TorchScript tracer (dynamo=False, legacy; no longer the default since torch 2.9) records one
    concrete example and can silently bake in a shape-derived Python value; the wrapper derives
    frame counts, ALiBi size and masks from the input shape, so the checked path is the safer
    one. Cost: slower export (tiny ~11 s, base ~25 s here, vs < 1 s with TorchScript).
    Weights are embedded (external_data=False) so the file can be renamed atomically; every
    preset is < 2 GB."""
    wav, lens = example_batch([SAMPLE_RATE, SAMPLE_RATE // 2 + 123])
    batch = torch.export.Dim("batch", min=1, max=1024)
    # torch.export specialises size-1 dims, so the traced range starts at 2 frames (720
    # samples); the ONNX graph has no guards and tests check 1-frame inputs (400..719) too.
    samples = torch.export.Dim(
        "samples", min=samples_for_frames(2, wrapper.spec), max=SAMPLE_RATE * 600)
    prog = torch.onnx.export(
        _ExportGraph(wrapper).eval(),
        (wav, lens),
        dynamo=True,
        input_names=["wav", "wav_lens"],
        output_names=list(EXPORT_OUTPUTS),
        dynamic_shapes={"wav": {0: batch, 1: samples}, "wav_lens": {0: batch}},
        opset_version=OPSET,
        external_data=False,
        optimize=True,
        verbose=False,
    )
    prog.save(str(path), external_data=False)


def _onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    m = onnx.load(str(path), load_external_data=False)

    def desc(v):
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        return {"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
                "shape": shape}

    return [desc(v) for v in m.graph.input], [desc(v) for v in m.graph.output]


def export_onnx(out_dir: Path, preset: str = "tiny", seed: int = 0, *, verify: bool = True,
                loaded: LoadedModel | None = None, source: dict | None = None) -> dict:
    """Write ``model.onnx``, ``tokens.txt`` and ``manifest.json`` into ``out_dir``; return the manifest.

    Weights: random of ``preset``'s architecture (seeded by ``seed``), or ``loaded``'s (a folder loaded by
    the family, as FunASR's AutoModel loads it; ``preset`` is then the preset its config matches, or
    "custom"). ``source`` (``{"kind", "ref", ...}``) is recorded in the manifest.

    Everything is first written under temporary names in ``out_dir``; only when the export, the IO check
    and (with ``verify``) the parity gate (ONNX Runtime CPU vs the torch wrapper on a padded batch, max abs
    error <= 1e-4) have passed are the three files renamed into place (``os.replace``), model first,
    manifest last. A failure leaves earlier files untouched and removes the temporaries."""
    out_dir = Path(out_dir)
    if loaded is not None:
        preset = loaded.preset
        tokens_bytes = loaded.files.tokens.read_bytes()
    else:
        preset_config(preset)  # unknown preset -> ValueError before anything is written
        tokens_bytes = "\n".join(REAL_TOKENS).encode("utf-8")
    source = source_entry(source, None if loaded is None else loaded.files.root, preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tag = f"{os.getpid()}.{time.monotonic_ns()}"
    tmp = {name: out_dir / f".{name}.{tag}.tmp" for name in ("model.onnx", "tokens.txt", "manifest.json")}
    try:
        # Labels come from the tokens file, read back the way a real model's file is read.
        atomic_write_bytes(tmp["tokens.txt"], tokens_bytes)
        labels = read_labels(tmp["tokens.txt"])
        if labels != list(EXPECTED_LABELS):
            raise SourceError(f"tokens file labels {labels} differ from the contract {EXPECTED_LABELS}")

        if loaded is None:
            model = build_model(preset, seed, vocab_size=len(labels))
        else:
            model = loaded.model
            if model.proj is None or model.proj.out_features != len(labels):
                raise SourceError(f"{loaded.files.weights}: classifier has "
                                  f"{None if model.proj is None else model.proj.out_features} outputs, "
                                  f"tokens file {len(labels)} labels")
        wrapper = Emotion2vecWrapper(model).eval()
        _export_to(wrapper, tmp["model.onnx"])

        parity = None
        if verify:
            wav, lens = example_batch([SAMPLE_RATE, 9000, 12345], seed=seed + 7)
            with torch.no_grad():
                tl, te = wrapper(wav, lens)
                tp = torch.softmax(tl, dim=-1)
            onnx_out = run_onnx(tmp["model.onnx"], {"wav": wav.numpy(), "wav_lens": lens.numpy()})
            parity = Parity(reference="torch wrapper (FunASR's modules, lengths-aware)",
                            gates={"logits": PARITY_GATE, "embedding": PARITY_GATE, "probs": PARITY_GATE},
                            inputs=f"padded batch of lengths {lens.tolist()}",
                            max_abs_err={"logits": float(np.abs(onnx_out["logits"] - tl.numpy()).max()),
                                         "embedding": float(np.abs(onnx_out["embedding"] - te.numpy()).max()),
                                         "probs": float(np.abs(onnx_out["probs"] - tp.numpy()).max())})
            if not parity.passed():
                raise RuntimeError(f"ONNX parity gate failed: {parity}")

        D = wrapper.embed_dim
        graph = {"inputs": [Tensor("wav", "float32", ("batch", "samples")).describe(),
                            Tensor("wav_lens", "int64", ("batch",)).describe()],
                 "outputs": [Tensor("logits", "float32", ("batch", len(labels))).describe(),
                             Tensor("embedding", "float32", ("batch", D)).describe(),
                             Tensor(PROBS_OUTPUT, "float32", ("batch", len(labels))).describe()]}
        _check_io(tmp["model.onnx"], graph)
        manifest = Manifest(
            model="emotion2vec", preset=preset, source=source, seed=seed,
            files={name: sha256_file(tmp[name]) for name in ("model.onnx", "tokens.txt")},
            graphs={"model.onnx": graph},
            parity=None if parity is None else asdict(parity),
            serving={"labels": labels, "embedding_dim": D, "sample_rate": SAMPLE_RATE,
                     "min_samples": min_samples(wrapper.spec),
                     "frames_per_second": SAMPLE_RATE / float(np.prod([s for _, _, s in wrapper.spec])),
                     "num_params": int(sum(p.numel() for p in model.parameters())),
                     "probs_output": PROBS_OUTPUT},
            config=preset_config(preset) if loaded is None else loaded.arch_config,
            config_source=(f"preset {preset!r} (random weights)" if loaded is None else str(loaded.files.config)),
            unconfirmed=list((UNCONFIRMED if loaded is None else UNCONFIRMED_LOADED).get(preset, [])),
            exporter={"torch.onnx.export": "dynamo=True", "opset": OPSET},
            versions=versions(), export_seconds=round(time.perf_counter() - t0, 3),
            weights=None if loaded is None else loaded_weights_entry(loaded),
            notes={"padding": "each item of a padded batch gives what FunASR gives it alone (lengths-aware "
                            "normalisation, convolutions, attention and pooling)",
                   "outputs": f"logits, embedding and {PROBS_OUTPUT} = softmax(logits) in the graph (serving "
                              "needs no separate softmax step)",
                   "graph_rewrites": f"{wrapper.rewritten_norms} transposed layer norms (conv front end, "
                                     "position convs) exported as channel layer norms over dim 1"},
        ).to_dict()
        atomic_write_bytes(
            tmp["manifest.json"],
            (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))

        for name in ("model.onnx", "tokens.txt", "manifest.json"):
            os.replace(tmp[name], out_dir / name)
        return manifest
    finally:
        for p in tmp.values():
            if p.exists():
                p.unlink()


PARITY_GATE = 1e-4


def _check_io(path: Path, graph: dict) -> None:
    """Declared IO must be what the graph says (names, dtypes, ranks, static dims)."""
    inputs, outputs = _onnx_io(path)
    for declared, actual in ((graph["inputs"], inputs), (graph["outputs"], outputs)):
        if [d["name"] for d in declared] != [a["name"] for a in actual]:
            raise RuntimeError(f"ONNX IO {actual} differs from manifest {declared}")
        for d, a in zip(declared, actual):
            if d["dtype"] != a["dtype"] or len(d["shape"]) != len(a["shape"]) or any(
                    dd != ad for dd, ad in zip(d["shape"], a["shape"]) if isinstance(dd, int)):
                raise RuntimeError(f"ONNX IO {a} differs from manifest {d}")


__all__ = [
    "PRESETS", "UNCONFIRMED", "REAL_TOKENS", "EXPECTED_LABELS", "SAMPLE_RATE",
    "build_model", "build_from_config", "preset_config", "Emotion2vecWrapper", "export_onnx",
    "read_tokens", "read_labels", "token_to_label", "conv_frames", "min_samples", "EXPECTED_LABELS",
    "samples_for_frames",
    "example_batch", "ChannelLayerNorm", "channel_norm_rewrite", "EXPORT_OUTPUTS", "PROBS_OUTPUT",
]
