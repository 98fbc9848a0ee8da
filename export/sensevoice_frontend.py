"""SenseVoiceSmall feature frontend as a plain-torch module that exports to ONNX.

Pipeline (FunASR ``WavFrontend`` as configured for SenseVoiceSmall, dither forced to 0):

  wav [B,S] float in [-1,1]  --x32768-->  Kaldi fbank (80 mel, 25 ms / 10 ms, hamming,
  snip_edges, remove DC, pre-emphasis 0.97, power spectrum, log, energy_floor 0)
  --> LFR (m=7, n=6: 560 dims, one frame per 60 ms)  --> CMVN from ``am.mvn``.

Batching: every item uses only its own ``wav_lens[b]`` samples (clipped to the padded
length), so a padded batch gives exactly the frames of the unbatched item; padded output
frames are zero.

Known difference from FunASR: an item shorter than one frame (400 samples = 25 ms) yields
0 frames here.  FunASR shrinks the window to the item length in that case; we do not
(a sub-25 ms input carries no speech and the gateway rejects it long before).

``reference_features`` is the reference implementation used by tests and export-time
verification: kaldi-native-fbank + FunASR's own ``apply_lfr`` / ``apply_cmvn``.
"""

from __future__ import annotations

import os
import warnings

import kaldi_native_fbank as knf
import numpy as np
import torch

from toneserve.export.errors import SourceError

# funasr is imported inside the functions that use it: importing it takes seconds and prints notices.

SAMPLE_RATE = 16000
FRAME_LENGTH_MS = 25
FRAME_SHIFT_MS = 10
N_MELS = 80
LFR_M = 7
LFR_N = 6
FEAT_DIM = N_MELS * LFR_M  # 560
PREEMPH = 0.97
LOW_FREQ = 20.0
HIGH_FREQ = 0.0  # <= 0 means relative to Nyquist (Kaldi convention)
WINDOW = "hamming"

WIN_SIZE = SAMPLE_RATE * FRAME_LENGTH_MS // 1000  # 400
HOP = SAMPLE_RATE * FRAME_SHIFT_MS // 1000  # 160
N_FFT = 1 << (WIN_SIZE - 1).bit_length()  # 512 (round_to_power_of_two)
LOG_EPS = float(np.finfo(np.float32).eps)  # Kaldi floors mel energies at FLT_EPSILON

# SenseVoiceSmall config.yaml frontend_conf + WavFrontend defaults (funasr 1.x).
FRONTEND_CONF = {
    "fs": SAMPLE_RATE,
    "window": WINDOW,
    "n_mels": N_MELS,
    "frame_length": FRAME_LENGTH_MS,
    "frame_shift": FRAME_SHIFT_MS,
    "lfr_m": LFR_M,
    "lfr_n": LFR_N,
    "dither": 0.0,
    "snip_edges": True,
    "energy_floor": 0.0,
    "preemphasis": PREEMPH,
    "remove_dc_offset": True,
    "low_freq": LOW_FREQ,
    "high_freq": HIGH_FREQ,
    "upscale_samples": 32768,
}


# ---------------------------------------------------------------------------------------
# am.mvn (Kaldi nnet1 text: <AddShift> = -mean, <Rescale> = 1/std)
# ---------------------------------------------------------------------------------------
def load_cmvn(path: str | os.PathLike) -> np.ndarray:
    """Load ``am.mvn`` exactly as FunASR's ``WavFrontend`` does; returns float32 [2, D]."""
    from funasr.frontends.wav_frontend import load_cmvn as _funasr_load_cmvn

    cmvn = _funasr_load_cmvn(str(path)).numpy().astype(np.float32)
    if cmvn.ndim != 2 or cmvn.shape[0] != 2 or cmvn.shape[1] != FEAT_DIM:
        raise SourceError(f"{path}: expected <AddShift>/<Rescale> of dim {FEAT_DIM}, got {cmvn.shape}")
    return cmvn


def standin_cmvn_text(seed: int = 0, dim: int = FEAT_DIM) -> str:
    """A plausible am.mvn (Kaldi nnet1 text format) for random-weight models.

    Log-mel means of 16-bit-scaled speech are roughly 8..15 with a smooth spectral tilt,
    standard deviations 2.5..5; the 80-dim pattern repeats over the 7 LFR slots, as in a
    real SenseVoice am.mvn.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(N_MELS)
    mean = 11.0 + 2.5 * np.cos(np.pi * k / N_MELS) + rng.normal(0.0, 0.3, N_MELS)
    std = 3.5 + 0.8 * np.sin(np.pi * k / N_MELS) + rng.normal(0.0, 0.1, N_MELS)
    shift = np.tile(-mean, dim // N_MELS)
    scale = np.tile(1.0 / std, dim // N_MELS)

    def vec(v: np.ndarray) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    return (
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n"
        "[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n"
        f"<LearnRateCoef> 0 [ {vec(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n"
        f"<LearnRateCoef> 0 [ {vec(scale)} ]\n"
        "</Nnet>\n"
    )


# ---------------------------------------------------------------------------------------
# Kaldi constants (computed in float64, stored float32)
# ---------------------------------------------------------------------------------------
def _mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks() -> np.ndarray:
    """Kaldi/knf mel filterbank, shape [n_fft//2 + 1, N_MELS] (Nyquist row is zero)."""
    n_bins = N_FFT // 2
    nyquist = SAMPLE_RATE / 2.0
    high = HIGH_FREQ if HIGH_FREQ > 0 else nyquist + HIGH_FREQ
    mel_low, mel_high = _mel(LOW_FREQ), _mel(high)
    delta = (mel_high - mel_low) / (N_MELS + 1)
    freqs = np.arange(n_bins) * (SAMPLE_RATE / N_FFT)
    mel = _mel(freqs)
    banks = np.zeros((n_bins + 1, N_MELS), dtype=np.float64)
    for b in range(N_MELS):
        left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
        up = (mel - left) / (center - left)
        down = (right - mel) / (right - center)
        w = np.where(mel <= center, up, down)
        w[(mel <= left) | (mel >= right)] = 0.0
        banks[:n_bins, b] = w
    return banks.astype(np.float32)


def hamming_window() -> np.ndarray:
    i = np.arange(WIN_SIZE, dtype=np.float64)
    return 0.54 - 0.46 * np.cos(2.0 * np.pi * i / (WIN_SIZE - 1))


def dft_matrix() -> np.ndarray:
    """Hamming window folded into a real DFT of the zero-padded frame: [WIN, 2*(N_FFT/2+1)]."""
    n = np.arange(WIN_SIZE, dtype=np.float64)[:, None]
    k = np.arange(N_FFT // 2 + 1, dtype=np.float64)[None, :]
    ang = 2.0 * np.pi * n * k / N_FFT
    win = hamming_window()[:, None]
    return np.concatenate([win * np.cos(ang), -win * np.sin(ang)], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------
# The exported module
# ---------------------------------------------------------------------------------------
class SenseVoiceFrontend(torch.nn.Module):
    """wav [B,S] float32 in [-1,1], wav_lens [B] int64 -> feats [B,T,560], feat_lens [B] int64."""

    def __init__(self, cmvn: np.ndarray):
        super().__init__()
        cmvn = np.asarray(cmvn, dtype=np.float32)
        self.register_buffer("cmvn_shift", torch.from_numpy(cmvn[0].copy()))
        self.register_buffer("cmvn_scale", torch.from_numpy(cmvn[1].copy()))
        self.register_buffer("dft", torch.from_numpy(dft_matrix()))
        self.register_buffer("mel", torch.from_numpy(kaldi_mel_banks()))
        self.register_buffer("win_offsets", torch.arange(WIN_SIZE, dtype=torch.int64))
        self.register_buffer("lfr_offsets", torch.arange(LFR_M, dtype=torch.int64) - (LFR_M - 1) // 2)

    def forward(self, wav: torch.Tensor, wav_lens: torch.Tensor):
        n_samples = torch._shape_as_tensor(wav)[1].to(torch.int64)
        # Lengths beyond the padded tensor (a caller bug) are clipped, never read past.
        wav_lens = torch.minimum(wav_lens.to(torch.int64), n_samples)
        # Frames the padded tensor can hold, and frames each item really has (snip_edges).
        # Clamp before dividing: ONNX integer Div truncates, Python // floors.
        n_frames_max = torch.clamp(n_samples - (WIN_SIZE - HOP), min=0) // HOP
        n_frames = torch.clamp(wav_lens - (WIN_SIZE - HOP), min=0) // HOP
        frame_starts = torch.arange(n_frames_max, dtype=torch.int64, device=wav.device) * HOP
        idx = frame_starts[:, None] + self.win_offsets[None, :]  # [F, 400]
        frames = wav[:, idx] * 32768.0  # [B, F, 400]

        frames = frames - frames.mean(dim=-1, keepdim=True)  # remove_dc_offset
        prev = torch.cat([frames[:, :, :1], frames[:, :, :-1]], dim=-1)
        frames = frames - PREEMPH * prev  # Kaldi: x[0] -= c * x[0]
        spec = torch.matmul(frames, self.dft)  # hamming folded in; [B, F, 2*257]
        n_bins = N_FFT // 2 + 1
        re, im = spec[..., :n_bins], spec[..., n_bins:]
        power = re * re + im * im
        fbank = torch.log(torch.clamp(torch.matmul(power, self.mel), min=LOG_EPS))  # [B,F,80]

        # LFR: output frame i stacks source frames clamp(i*6 + j - 3, 0, n_frames-1), j<7.
        n_lfr_max = (n_frames_max + (LFR_N - 1)) // LFR_N
        feat_lens = (n_frames + (LFR_N - 1)) // LFR_N
        lfr_pos = torch.arange(n_lfr_max, dtype=torch.int64, device=wav.device) * LFR_N
        src = lfr_pos[:, None] + self.lfr_offsets[None, :]  # [T, 7]
        last = torch.clamp(n_frames - 1, min=0)  # [B]
        src = torch.minimum(torch.clamp(src, min=0)[None, :, :], last[:, None, None])  # [B,T,7]
        # One gather per LFR slot, concatenated: keeps the 560 feature axis static in ONNX.
        stacked = torch.cat(
            [torch.gather(fbank, 1, src[:, :, j : j + 1].expand(-1, -1, N_MELS)) for j in range(LFR_M)],
            dim=-1,
        )

        feats = (stacked + self.cmvn_shift) * self.cmvn_scale
        valid = torch.arange(n_lfr_max, dtype=torch.int64, device=wav.device)[None, :] < feat_lens[:, None]
        feats = feats * valid[:, :, None].to(feats.dtype)  # padded frames -> 0 (all finite)
        return feats, feat_lens


FRONTEND_INPUTS = [
    {"name": "wav", "dtype": "float32", "shape": ["batch", "samples"]},
    {"name": "wav_lens", "dtype": "int64", "shape": ["batch"]},
]
FRONTEND_OUTPUTS = [
    {"name": "feats", "dtype": "float32", "shape": ["batch", "frames", FEAT_DIM]},
    {"name": "feat_lens", "dtype": "int64", "shape": ["batch"]},
]


def export_frontend_onnx(cmvn: np.ndarray, path: str | os.PathLike, opset: int = 17) -> None:
    """Export the frontend with the TorchScript-based exporter (dynamo=False)."""
    module = SenseVoiceFrontend(cmvn).eval()
    # Dummy lengths differ from the test/serving shapes so nothing gets baked in.
    wav = torch.zeros(2, 16000 + 123, dtype=torch.float32)
    wav_lens = torch.tensor([16000 + 123, 9000], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        # Harmless TorchScript-exporter note about Slice folding; the DeprecationWarning
        # for the legacy exporter is left visible on purpose.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            (wav, wav_lens),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["wav", "wav_lens"],
            output_names=["feats", "feat_lens"],
            dynamic_axes={
                "wav": {0: "batch", 1: "samples"},
                "wav_lens": {0: "batch"},
                "feats": {0: "batch", 1: "frames"},
                "feat_lens": {0: "batch"},
            },
            do_constant_folding=True,
        )


# ---------------------------------------------------------------------------------------
# Reference: kaldi-native-fbank + FunASR apply_lfr / apply_cmvn
# ---------------------------------------------------------------------------------------
def reference_features(wav: np.ndarray, cmvn: np.ndarray) -> np.ndarray:
    """One unpadded item (float in [-1,1]) -> [T, 560] float32, the FunASR way with dither 0."""
    from funasr.frontends.wav_frontend import apply_cmvn, apply_lfr

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = FRAME_LENGTH_MS
    opts.frame_opts.frame_shift_ms = FRAME_SHIFT_MS
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = WINDOW
    opts.frame_opts.snip_edges = True
    opts.frame_opts.preemph_coeff = PREEMPH
    opts.frame_opts.remove_dc_offset = True
    opts.mel_opts.num_bins = N_MELS
    opts.mel_opts.low_freq = LOW_FREQ
    opts.mel_opts.high_freq = HIGH_FREQ
    opts.energy_floor = 0.0
    opts.use_energy = False
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(SAMPLE_RATE, (np.asarray(wav, dtype=np.float32) * 32768.0).tolist())
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, FEAT_DIM), dtype=np.float32)
    mat = torch.from_numpy(np.stack([fb.get_frame(i) for i in range(n)]).astype(np.float32))
    mat = apply_lfr(mat, LFR_M, LFR_N)
    mat = apply_cmvn(mat, torch.from_numpy(np.asarray(cmvn, dtype=np.float32)))
    return mat.numpy().astype(np.float32)


__all__ = [
    "FEAT_DIM",
    "FRONTEND_CONF",
    "FRONTEND_INPUTS",
    "FRONTEND_OUTPUTS",
    "SenseVoiceFrontend",
    "export_frontend_onnx",
    "load_cmvn",
    "reference_features",
    "standin_cmvn_text",
]

