"""Speaker-embedding graphs (diarization) as plain-torch modules that export to one ONNX graph each.

Every graph has the same contract, whatever the encoder:

  wav [batch, samples] float32 (16 kHz, in [-1, 1], zero-padded) + wav_lens [batch] int64
  -> embedding [batch, dim] float32, L2-normalised.

Each row uses only its own ``wav_lens[b]`` samples (clipped to the padded length), and every step that
looks across time (partials, convolutions, poolings, means) is masked per row, so a zero-padded batch gives
the embeddings of its rows run alone (within float rounding).

Encoders:

* **Resemblyzer** (GE2E, 256-d; weights in the resemblyzer wheel): the graph computes exactly what
  ``VoiceEncoder.embed_utterance(wav)`` computes with its defaults (rate 1.3, min_coverage 0.75): librosa's
  mel power spectrogram (n_fft 400, hop 160, hann, 40 slaney mels, ``center=True`` with librosa 0.11's
  ``pad_mode="constant"``: zeros; not log), partials of 160 frames every round(16000 / 1.3 / 160) = 77
  frames (the last dropped when less than 75 % of it is audio, unless it is the only one), the wav padded with
  zeros to the last partial's end, a 3-layer LSTM over each partial, Linear + ReLU + L2 norm per partial, the
  mean of the partials, L2 norm.
* **CAM++** (3D-Speaker's, 192-d, FunASR's ``CAMPPlus`` class): 80-dim Kaldi fbank as FunASR's
  ``campplus.utils.extract_feature`` computes it (povey window, snip_edges, dither 0, the wav unscaled),
  minus its mean over time, then CAM++'s layers with every time-context step masked per row.

Imports torch at module level: the family module (``toneserve.export.families.speaker``) imports this one
only inside the methods that need it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toneserve.export.errors import SourceError

SAMPLE_RATE = 16000
GRAPH = "model.onnx"
INPUTS = [{"name": "wav", "dtype": "float32", "shape": ["batch", "samples"]},
          {"name": "wav_lens", "dtype": "int64", "shape": ["batch"]}]


def outputs(dim: int) -> list[dict]:
    return [{"name": "embedding", "dtype": "float32", "shape": ["batch", dim]}]


def _clipped_lens(wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded length as an int64 tensor, lengths clipped to it: a caller's bug never reads past the tensor)."""
    n_samples = torch._shape_as_tensor(wav)[1].to(torch.int64)
    return n_samples, torch.clamp(torch.minimum(wav_lens.to(torch.int64), n_samples), min=0)


def _arange(n: Any, like: torch.Tensor) -> torch.Tensor:
    """int64 0..n-1; ``n`` may be a 0-d tensor (a dynamic size in the exported graph)."""
    return torch.arange(n, dtype=torch.int64, device=like.device)


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x / torch.clamp(torch.linalg.vector_norm(x, dim=-1, keepdim=True), min=1e-12)


# ============================================================================================ Resemblyzer

RZ_N_FFT = 400  # 25 ms
RZ_HOP = 160  # 10 ms
RZ_MELS = 40
RZ_PARTIAL = 160  # frames per partial utterance (1.6 s)
RZ_RATE = 1.3  # embed_utterance's default
RZ_MIN_COVERAGE = 0.75  # embed_utterance's default
RZ_FRAME_STEP = int(np.round((SAMPLE_RATE / RZ_RATE) / RZ_HOP))  # 77 frames between partials
RZ_PARTIAL_SAMPLES = RZ_PARTIAL * RZ_HOP  # 25600
# A last partial with fewer real samples than this is dropped (exact: 25600 * 0.75 is an integer).
RZ_MIN_LAST = int(RZ_PARTIAL_SAMPLES * RZ_MIN_COVERAGE)  # 19200
RZ_HIDDEN = 256
RZ_LAYERS = 3
RZ_DIM = 256
RZ_STATE_SHAPES = {
    **{f"lstm.{kind}_l{i}": shape for i in range(RZ_LAYERS)
       for kind, shape in (("weight_ih", (4 * RZ_HIDDEN, RZ_MELS if i == 0 else RZ_HIDDEN)),
                           ("weight_hh", (4 * RZ_HIDDEN, RZ_HIDDEN)), ("bias_ih", (4 * RZ_HIDDEN,)),
                           ("bias_hh", (4 * RZ_HIDDEN,)))},
    "linear.weight": (RZ_DIM, RZ_HIDDEN), "linear.bias": (RZ_DIM,),
}


def rz_partials(n_samples: int) -> int:
    """How many partials ``VoiceEncoder.compute_partial_slices(n, 1.3, 0.75)`` gives (tests check it is so)."""
    n_frames = (n_samples + RZ_HOP) // RZ_HOP  # ceil((n + 1) / 160)
    steps = max(1, n_frames - RZ_PARTIAL + RZ_FRAME_STEP + 1)
    count = (steps + RZ_FRAME_STEP - 1) // RZ_FRAME_STEP
    if count > 1 and n_samples - (count - 1) * RZ_FRAME_STEP * RZ_HOP < RZ_MIN_LAST:
        count -= 1
    return count


class ResemblyzerEncoder(nn.Module):
    """The GE2E network of ``resemblyzer.VoiceEncoder`` (same parameter names), without its loading code."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(RZ_MELS, RZ_HIDDEN, RZ_LAYERS, batch_first=True)
        self.linear = nn.Linear(RZ_HIDDEN, RZ_DIM)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:  # [N, 160, 40] -> [N, 256], L2-normalised
        _, (hidden, _) = self.lstm(mels)
        return _l2(self.relu(self.linear(hidden[-1])))


def librosa_constants() -> tuple[np.ndarray, np.ndarray]:
    """(hann-windowed real DFT basis [400, 2 * 201], slaney mel filterbank [201, 40]) as librosa's
    ``melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40)`` uses them."""
    import librosa

    window = librosa.filters.get_window("hann", RZ_N_FFT, fftbins=True).astype(np.float64)
    n = np.arange(RZ_N_FFT, dtype=np.float64)[:, None]
    k = np.arange(RZ_N_FFT // 2 + 1, dtype=np.float64)[None, :]
    ang = 2.0 * np.pi * n * k / RZ_N_FFT
    dft = np.concatenate([window[:, None] * np.cos(ang), -window[:, None] * np.sin(ang)], axis=1)
    mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=RZ_N_FFT, n_mels=RZ_MELS)  # [40, 201], float32
    return dft.astype(np.float32), np.ascontiguousarray(mel.T.astype(np.float32))


class ResemblyzerGraph(nn.Module):
    """wav [B,S], wav_lens [B] -> embedding [B,256]: ``VoiceEncoder.embed_utterance`` per row (module docstring)."""

    dim = RZ_DIM
    dft: torch.Tensor
    mel: torch.Tensor
    win_offsets: torch.Tensor
    partial_offsets: torch.Tensor

    def __init__(self, encoder: ResemblyzerEncoder):
        super().__init__()
        self.encoder = encoder
        dft, mel = librosa_constants()
        self.register_buffer("dft", torch.from_numpy(dft))
        self.register_buffer("mel", torch.from_numpy(mel))
        self.register_buffer("win_offsets", torch.arange(RZ_N_FFT, dtype=torch.int64))
        self.register_buffer("partial_offsets", torch.arange(RZ_PARTIAL, dtype=torch.int64))

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        n_samples, lens = _clipped_lens(wav, wav_lens)
        positions = _arange(n_samples, wav)
        wav = torch.where(positions[None, :] < lens[:, None], wav, torch.zeros_like(wav))
        # Partials the padded length can hold (before the coverage rule): every row has at most as many.
        n_frames = (n_samples + RZ_HOP) // RZ_HOP
        steps = torch.clamp(n_frames - (RZ_PARTIAL - RZ_FRAME_STEP - 1), min=1)
        k_max = (steps + RZ_FRAME_STEP - 1) // RZ_FRAME_STEP
        needed = (k_max - 1) * RZ_FRAME_STEP + RZ_PARTIAL  # mel frames the partials read
        # center=True, pad_mode="constant": n_fft // 2 zeros before; zeros after, as far as any partial reads
        # (the wav beyond a row's length is zeros anyway: embed_utterance pads it with zeros).
        half = RZ_N_FFT // 2
        batch = wav.shape[0]
        padded = torch.cat([wav.new_zeros(batch, half), wav, wav.new_zeros(batch, RZ_PARTIAL_SAMPLES + RZ_N_FFT)],
                           dim=1)
        starts = _arange(needed, wav) * RZ_HOP
        frames = padded[:, starts[:, None] + self.win_offsets[None, :]]  # [B, F, 400]
        spec = torch.matmul(frames, self.dft)
        n_bins = RZ_N_FFT // 2 + 1
        re, im = spec[..., :n_bins], spec[..., n_bins:]
        mels = torch.matmul(re * re + im * im, self.mel)  # [B, F, 40] power mel, not log
        first = _arange(k_max, wav) * RZ_FRAME_STEP
        parts = mels[:, first[:, None] + self.partial_offsets[None, :], :]  # [B, K, 160, 40]
        k = parts.shape[1]
        embeds = self.encoder(parts.reshape(-1, RZ_PARTIAL, RZ_MELS)).reshape(batch, k, RZ_DIM)
        # Each row's partial count (VoiceEncoder.compute_partial_slices).
        row_frames = (lens + RZ_HOP) // RZ_HOP
        row_steps = torch.clamp(row_frames - (RZ_PARTIAL - RZ_FRAME_STEP - 1), min=1)
        count = (row_steps + RZ_FRAME_STEP - 1) // RZ_FRAME_STEP
        last_start = (count - 1) * (RZ_FRAME_STEP * RZ_HOP)
        count = count - ((count > 1) & (lens - last_start < RZ_MIN_LAST)).to(torch.int64)
        used = _arange(k_max, wav)[None, :] < count[:, None]  # [B, K]
        total = torch.where(used[:, :, None], embeds, torch.zeros_like(embeds)).sum(dim=1)
        return _l2(total / count[:, None].to(total.dtype))


def resemblyzer_wheel_weights() -> Path:
    """``pretrained.pt`` of the installed resemblyzer wheel (Apache-2.0)."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise SourceError("the resemblyzer package is not installed (pip install resemblyzer==0.1.4 --no-deps)")
    path = Path(spec.origin).parent / "pretrained.pt"
    if not path.is_file():
        raise SourceError(f"the resemblyzer wheel at {path.parent} has no pretrained.pt")
    return path


def resemblyzer_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a Resemblyzer checkpoint (``{"model_state": ...}``, as the wheel ships it),
    read with ``torch.load(weights_only=True)`` only; anything else is refused, naming what is wrong."""
    from toneserve.export.loading import read_checkpoint

    path = Path(path)
    obj = read_checkpoint(path)  # weights_only=True; a refusal names what it met, never a full load
    state = obj.get("model_state") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise SourceError(f"{path}: no 'model_state' dict inside: not a Resemblyzer VoiceEncoder checkpoint")
    missing = [k for k in RZ_STATE_SHAPES if k not in state]
    shaped = [f"{k} {tuple(state[k].shape)} (expected {RZ_STATE_SHAPES[k]})" for k in RZ_STATE_SHAPES
              if k in state and tuple(getattr(state[k], "shape", ())) != RZ_STATE_SHAPES[k]]
    if missing or shaped:
        raise SourceError(f"{path} does not fit Resemblyzer's encoder (LSTM 40->256 x3, Linear 256->256): "
                          + "; ".join(filter(None, [f"missing {', '.join(missing[:5])}" if missing else "",
                                                    f"other shapes: {', '.join(shaped[:5])}" if shaped else ""])))
    return {k: state[k].float() for k in RZ_STATE_SHAPES}


def build_resemblyzer(state: dict[str, torch.Tensor] | None, seed: int = 0) -> ResemblyzerGraph:
    """The graph module, with ``state`` (see :func:`resemblyzer_state`) or random weights (``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ResemblyzerEncoder()
    if state is not None:
        encoder.load_state_dict(state, strict=True)
    return ResemblyzerGraph(encoder).eval()


def resemblyzer_reference(graph: ResemblyzerGraph) -> Any:
    """Resemblyzer's own ``VoiceEncoder`` on the CPU holding the graph's weights (the parity reference)."""
    import contextlib
    import io

    from resemblyzer import VoiceEncoder  # type: ignore[import-untyped]

    with contextlib.redirect_stdout(io.StringIO()):
        reference = VoiceEncoder(device="cpu", verbose=False)
    reference.load_state_dict(graph.encoder.state_dict(), strict=False)
    return reference.eval()


# ============================================================================================ CAM++

CAMPP_DIM = 192
_FBANK_WIN = 400
_FBANK_HOP = 160
_FBANK_FFT = 512
_FBANK_MELS = 80
_PREEMPH = 0.97
_SEG_LEN = 100  # CAMLayer.seg_pooling's segment


def povey_dft() -> np.ndarray:
    """Kaldi's povey window folded into a real DFT of the frame zero-padded to 512: [400, 2 * 257]."""
    i = np.arange(_FBANK_WIN, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * i / (_FBANK_WIN - 1))) ** 0.85
    k = np.arange(_FBANK_FFT // 2 + 1, dtype=np.float64)[None, :]
    ang = 2.0 * np.pi * i[:, None] * k / _FBANK_FFT
    return np.concatenate([window[:, None] * np.cos(ang), -window[:, None] * np.sin(ang)], axis=1).astype(np.float32)


class KaldiFbank(nn.Module):
    """FunASR's ``campplus.utils.extract_feature`` per row: ``fbank(wav, num_mel_bins=80)`` with its defaults
    (25 / 10 ms, povey, snip_edges, remove DC, pre-emphasis 0.97, power, log floored at FLT_EPSILON, dither 0,
    wav in [-1, 1] unscaled) minus its mean over the row's frames. -> (feats [B, T, 80] zero beyond a row's
    frames, frame counts [B]).

    ``window="hamming", scale=32768`` is WeSpeaker's ``compute_fbank`` (hamming, the wav scaled to 16-bit
    range, the rest alike)."""

    dft: torch.Tensor
    mel: torch.Tensor
    win_offsets: torch.Tensor

    def __init__(self, window: str = "povey", scale: float = 1.0) -> None:
        super().__init__()
        # The same Kaldi mel banks (and, for hamming, the same windowed DFT) as the SenseVoice frontend.
        from toneserve.export.sensevoice_frontend import LOG_EPS, dft_matrix, kaldi_mel_banks

        if window not in ("povey", "hamming"):
            raise ValueError(f"window must be povey or hamming, not {window!r}")
        self.log_eps = LOG_EPS
        self.scale = float(scale)
        self.register_buffer("dft", torch.from_numpy(povey_dft() if window == "povey" else dft_matrix()))
        self.register_buffer("mel", torch.from_numpy(kaldi_mel_banks()))
        self.register_buffer("win_offsets", torch.arange(_FBANK_WIN, dtype=torch.int64))

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_samples, lens = _clipped_lens(wav, wav_lens)
        # Clamp before dividing: ONNX integer Div truncates, Python // floors.
        n_max = torch.clamp(n_samples - (_FBANK_WIN - _FBANK_HOP), min=0) // _FBANK_HOP
        n_frames = torch.clamp(lens - (_FBANK_WIN - _FBANK_HOP), min=0) // _FBANK_HOP
        starts = _arange(n_max, wav) * _FBANK_HOP
        frames = wav[:, starts[:, None] + self.win_offsets[None, :]]  # [B, T, 400]
        if self.scale != 1.0:
            frames = frames * self.scale
        frames = frames - frames.mean(dim=-1, keepdim=True)
        frames = frames - _PREEMPH * torch.cat([frames[:, :, :1], frames[:, :, :-1]], dim=-1)
        spec = torch.matmul(frames, self.dft)
        n_bins = _FBANK_FFT // 2 + 1
        re, im = spec[..., :n_bins], spec[..., n_bins:]
        feats = torch.log(torch.clamp(torch.matmul(re * re + im * im, self.mel), min=self.log_eps))
        valid = (_arange(n_max, wav)[None, :] < n_frames[:, None])[:, :, None]
        feats = torch.where(valid, feats, torch.zeros_like(feats))
        mean = feats.sum(dim=1, keepdim=True) / torch.clamp(n_frames, min=1)[:, None, None].to(feats.dtype)
        return torch.where(valid, feats - mean, torch.zeros_like(feats)), n_frames


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero beyond each row's frames (``mask`` broadcasts over x; time is x's last axis)."""
    return torch.where(mask, x, torch.zeros_like(x))


class CamppGraph(nn.Module):
    """wav [B,S], wav_lens [B] -> embedding [B,192]: FunASR's ``CAMPPlus`` forward on each row's features,
    every time-context step masked per row (convolutions see zeros beyond a row, as a row run alone does;
    means, segment poolings and statistics count only its frames)."""

    dim = CAMPP_DIM

    model: Any  # FunASR's CAMPPlus (untyped)

    def __init__(self, model: Any):
        super().__init__()
        if getattr(model, "output_level", "segment") != "segment":
            raise SourceError("CAM++ with output_level 'frame' gives no utterance embedding")
        self.model = model
        self.fbank = KaldiFbank()
        self.dim = int(model.xvector.dense.linear.out_channels)

    # -------------------------------------------------------------------- layers, masked
    @staticmethod
    def _res_block(block: Any, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = F.relu(block.bn1(block.conv1(_masked(x, mask))))
        out = block.bn2(block.conv2(_masked(out, mask)))
        return F.relu(out + block.shortcut(x))  # the shortcut is pointwise in time

    def _head(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        head: Any = self.model.head
        m4 = mask[:, None, None, :]  # [B,1,1,T]
        x = feats.permute(0, 2, 1).unsqueeze(1)  # [B,1,80,T]
        out = F.relu(head.bn1(head.conv1(_masked(x, m4))))
        for layer in (head.layer1, head.layer2):
            for block in layer:
                out = self._res_block(block, out, m4)
        out = F.relu(head.bn2(head.conv2(_masked(out, m4))))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])

    @staticmethod
    def _cam(cam: Any, x: torch.Tensor, mask: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        x = _masked(x, mask)
        y = cam.linear_local(x)
        n = lens.to(x.dtype)[:, None, None]
        mean = x.sum(dim=-1, keepdim=True) / torch.clamp(n, min=1.0)
        # seg_pooling: avg_pool1d(kernel=stride=100, ceil_mode=True) averages the frames of each segment that
        # exist; here, the frames of the row's own.
        t = x.shape[-1]
        n_seg = (t + _SEG_LEN - 1) // _SEG_LEN
        pad = n_seg * _SEG_LEN - t
        sums = F.pad(x, (0, pad)).reshape(x.shape[0], x.shape[1], n_seg, _SEG_LEN).sum(dim=-1)  # [B,C,S]
        seg_start = _arange(n_seg, x)[None, :] * _SEG_LEN
        counts = torch.clamp(torch.minimum(lens[:, None] - seg_start, torch.full_like(seg_start, _SEG_LEN)), min=1)
        seg = sums / counts[:, None, :].to(x.dtype)
        seg = seg[:, :, :, None].expand(-1, -1, -1, _SEG_LEN).reshape(x.shape[0], x.shape[1], -1)[..., :t]
        context = cam.relu(cam.linear1(mean + seg))
        return y * cam.sigmoid(cam.linear2(context))

    def _xvector(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        xv: Any = self.model.xvector
        t_in = x.shape[-1]
        mask = _arange(t_in, x)[None, None, :] < lens[:, None, None]
        x = xv.tdnn(_masked(x, mask))
        conv = xv.tdnn.linear
        lens = (lens + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
        t = x.shape[-1]
        mask = _arange(t, x)[None, None, :] < lens[:, None, None]
        for i in (1, 2, 3):
            for layer in getattr(xv, f"block{i}"):
                y = layer.nonlinear2(layer.linear1(layer.nonlinear1(x)))
                x = torch.cat([x, self._cam(layer.cam_layer, y, mask, lens)], dim=1)
            x = getattr(xv, f"transit{i}")(x)
        x = xv.out_nonlinear(x)
        # StatsPool over the row's frames: mean and unbiased std.
        n = lens.to(x.dtype)[:, None]
        mean = _masked(x, mask).sum(dim=-1) / torch.clamp(n, min=1.0)
        var = _masked((x - mean[:, :, None]) ** 2, mask).sum(dim=-1) / torch.clamp(n - 1.0, min=1.0)
        stats = torch.cat([mean, torch.sqrt(var)], dim=-1)
        return xv.dense(stats)

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> torch.Tensor:
        feats, n_frames = self.fbank(wav, wav_lens)
        t = feats.shape[1]
        mask = _arange(t, wav)[None, :] < n_frames[:, None]
        x = self._head(feats, mask)
        return _l2(self._xvector(x, n_frames))


def campplus_reference(model: Any, wav: np.ndarray) -> np.ndarray:
    """FunASR's own CAM++ inference path on one clip (``CAMPPlus.inference``: its ``extract_feature`` and
    forward), L2-normalised."""
    with torch.no_grad():
        results, _ = model.inference([torch.from_numpy(np.asarray(wav, np.float32))], device="cpu")
    emb = results[0]["spk_embedding"][0].numpy().astype(np.float64)
    return (emb / np.linalg.norm(emb)).astype(np.float32)


# ============================================================================================ WeSpeaker

WESPEAKER_ONNX = "voxceleb_resnet34_LM.onnx"  # Hugging Face Wespeaker/wespeaker-voxceleb-resnet34-LM
_OPSET = 17


def reference_fbank(wav: np.ndarray, *, window: str, scale: float) -> np.ndarray:
    """One clip's Kaldi fbank (kaldi-native-fbank: 80 mels, 25 / 10 ms, snip_edges, dither 0) minus its mean
    over time: WeSpeaker's ``compute_fbank`` with ``window="hamming", scale=32768``."""
    import kaldi_native_fbank as knf  # type: ignore[import-untyped]

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = _FBANK_MELS
    opts.use_energy = False
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(SAMPLE_RATE, (np.asarray(wav, np.float32) * scale).tolist())
    fb.input_finished()
    if fb.num_frames_ready == 0:
        return np.zeros((0, _FBANK_MELS), np.float32)
    mat = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)]).astype(np.float32)
    return mat - mat.mean(axis=0, keepdims=True)


class _FbankOnly(nn.Module):
    def __init__(self, fbank: KaldiFbank):
        super().__init__()
        self.fbank = fbank

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fbank(wav, wav_lens)


def wespeaker_io(model: Any) -> tuple[str, str, int]:
    """(input name, output name, embedding dim) of a WeSpeaker ONNX graph (feats [B, T, 80] -> embs [B, D]);
    anything else is refused."""
    from onnx import TensorProto

    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    outs = list(model.graph.output)

    def dims(v: Any) -> list[Any]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    if (len(inputs) != 1 or len(outs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT
            or len(dims(inputs[0])) != 3 or dims(inputs[0])[2] != _FBANK_MELS or len(dims(outs[0])) != 2
            or not isinstance(dims(outs[0])[1], int) or dims(outs[0])[1] <= 0):
        raise SourceError("not a WeSpeaker embedding graph: expected one input feats [B, T, 80] float32 and one "
                          f"output embs [B, D]; got inputs {[(v.name, dims(v)) for v in inputs]}, outputs "
                          f"{[(v.name, dims(v)) for v in outs]}")
    return inputs[0].name, outs[0].name, int(dims(outs[0])[1])


def wespeaker_graph(encoder: Any, path: str | os.PathLike, *, min_frames: int = 1) -> int:
    """Write ``path``: the fbank front end (``KaldiFbank("hamming", 32768)``, exported from torch) followed by
    the WeSpeaker ONNX graph ``encoder`` (a ModelProto, as published) run on each row's own frames (an ONNX
    Loop over the batch: the published graph pools over every frame it is given, so padding would change a
    row's embedding), then L2 normalisation. Returns the embedding dim."""
    import copy
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper, version_converter

    feats_name, embs_name, dim = wespeaker_io(encoder)
    encoder = copy.deepcopy(encoder)
    opset = max((o.version for o in encoder.opset_import if o.domain in ("", "ai.onnx")), default=_OPSET)
    if opset != _OPSET:
        encoder = version_converter.convert_version(encoder, _OPSET)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(_FbankOnly(KaldiFbank("hamming", 32768.0)), Path(tmp) / "fbank.onnx", output_names=("feats",
                    "n_frames"), dynamic_outputs={"feats": {0: "batch", 1: "frames"}, "n_frames": {0: "batch"}})
        front = onnx.load(str(Path(tmp) / "fbank.onnx"))

    prefix = "wespeaker/"
    enc = encoder.graph
    rename = {t.name: prefix + t.name for t in enc.initializer}
    for node in enc.node:
        for name in node.output:
            rename[name] = prefix + name
    row = prefix + "row_feats"
    rename[feats_name] = row
    body_nodes = []
    for node in enc.node:
        new = copy.deepcopy(node)
        new.name = prefix + (node.name or node.op_type)
        new.input[:] = [rename.get(n, n) if n else n for n in node.input]
        new.output[:] = [rename[n] for n in node.output]
        body_nodes.append(new)
    inits = []
    for t in enc.initializer:
        t2 = copy.deepcopy(t)
        t2.name = rename[t.name]
        inits.append(t2)

    def const(name: str, value: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=np.int64), name)

    inits += [const("spk/axis0", [0]), const("spk/axis1", [1]), const("spk/zero1", [0]), const("spk/one", 1),
              const("spk/one1", [1]), const("spk/min_frames", int(max(1, min_frames)))]
    row_emb = prefix + "row_emb"
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["iter", "spk/axis0"], ["spk/b0"]),
         helper.make_node("Add", ["spk/b0", "spk/one1"], ["spk/b1"]),
         helper.make_node("Slice", ["feats", "spk/b0", "spk/b1", "spk/axis0"], ["spk/row_all"]),
         helper.make_node("Gather", ["n_frames", "iter"], ["spk/n"]),
         helper.make_node("Max", ["spk/n", "spk/min_frames"], ["spk/n_min"]),
         helper.make_node("Unsqueeze", ["spk/n_min", "spk/axis0"], ["spk/n1"]),
         helper.make_node("Slice", ["spk/row_all", "spk/zero1", "spk/n1", "spk/axis1"], [row]),
         *body_nodes,
         helper.make_node("Identity", [rename[embs_name]], [row_emb]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "per_row",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(row_emb, TensorProto.FLOAT, [1, dim])])
    graph = front.graph
    nodes = list(graph.node) + [
        helper.make_node("Shape", ["feats"], ["spk/feats_shape"]),
        helper.make_node("Gather", ["spk/feats_shape", "spk/zero1"], ["spk/batch1"]),
        helper.make_node("Squeeze", ["spk/batch1", "spk/axis0"], ["spk/batch"]),
        helper.make_node("Constant", [], ["spk/true"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["spk/batch", "spk/true"], ["spk/stacked"], body=body),
        helper.make_node("Squeeze", ["spk/stacked", "spk/axis1"], ["spk/raw"]),
        helper.make_node("ReduceL2", ["spk/raw"], ["spk/norm"], axes=[-1], keepdims=1),
        helper.make_node("Max", ["spk/norm", "spk/eps"], ["spk/norm_min"]),
        helper.make_node("Div", ["spk/raw", "spk/norm_min"], ["embedding"]),
    ]
    inits.append(numpy_helper.from_array(np.asarray(1e-12, np.float32), "spk/eps"))
    merged = helper.make_graph(
        nodes, "speaker_wespeaker", list(graph.input),
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=list(graph.initializer) + inits)
    model = helper.make_model(merged, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="toneserve.export.speaker")
    model.ir_version = min(front.ir_version, 9) if front.ir_version else 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return dim


# ============================================================================================ export

def export_onnx(module: nn.Module, path: str | os.PathLike, opset: int = 17,
                output_names: tuple[str, ...] = ("embedding",), dynamic_outputs: dict | None = None) -> None:
    """Export ``module`` (wav, wav_lens -> embedding) with the TorchScript-based exporter (dynamo=False),
    ``batch`` and ``samples`` dynamic."""
    module = module.eval()
    # Dummy lengths differ from the test/serving shapes so nothing gets baked in.
    wav = torch.zeros(2, 3 * SAMPLE_RATE + 123, dtype=torch.float32)
    wav_lens = torch.tensor([3 * SAMPLE_RATE + 123, 20000], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(module, (wav, wav_lens), str(path), dynamo=False, opset_version=opset,
                          input_names=["wav", "wav_lens"], output_names=list(output_names),
                          dynamic_axes={"wav": {0: "batch", 1: "samples"}, "wav_lens": {0: "batch"},
                                        **(dynamic_outputs or {"embedding": {0: "batch"}})},
                          do_constant_folding=True)


def ort_session(path: str | os.PathLike) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def padded(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.array([len(c) for c in clips], np.int64)
    wav = np.zeros((len(clips), int(lens.max())), np.float32)
    for i, clip in enumerate(clips):
        wav[i, :len(clip)] = clip
    return wav, lens


def embed(session: Any, clips: list[np.ndarray]) -> np.ndarray:
    """The graph's embeddings of ``clips`` as one zero-padded batch."""
    wav, lens = padded(clips)
    return session.run(["embedding"], {"wav": wav, "wav_lens": lens})[0]


__all__ = [
    "CAMPP_DIM", "GRAPH", "INPUTS", "RZ_DIM", "CamppGraph", "KaldiFbank", "ResemblyzerEncoder", "ResemblyzerGraph",
    "build_resemblyzer", "campplus_reference", "embed", "export_onnx", "ort_session", "outputs", "padded",
    "resemblyzer_reference", "resemblyzer_state", "resemblyzer_wheel_weights", "rz_partials", "WESPEAKER_ONNX",
    "reference_fbank", "wespeaker_graph", "wespeaker_io",
]
