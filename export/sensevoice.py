"""SenseVoiceSmall -> ONNX (frontend.onnx + encoder.onnx) with decode assets and manifest.

The encoder is FunASR's own ``SenseVoiceSmall`` class (funasr.models.sense_voice.model)
run through FunASR's own export forward (funasr.models.sense_voice.export_meta.
export_forward): four query embeddings [language, emotion, event, textnorm] are
prepended, lengths + 4 go into the SANM encoder (which masks padding in both the FSMN
memory and the attention), and ``ctc.ctc_lo`` gives RAW LOGITS (FunASR's inference then
applies log_softmax; argmax and the per-family softmax in ``sensevoice_decode`` do not
care which).

Weights are random unless a model folder loaded by the family is given (``loaded``: hub
download or local copy, see ``toneserve.export.families.sensevoice``); manifest.json says which
(``weights_origin``, ``source``). Exporter: TorchScript-based ``torch.onnx.export(dynamo=False)``, opset 17
(the same path FunASR's own export uses; about 20x faster to export than dynamo=True on
this model and the tests show padded-batch parity).

Public API:
  PRESETS, build_model(preset, vocab_size, seed=0), export_onnx(out_dir, preset="tiny",
  seed=0, bpe_model=None, cmvn_file=None, loaded=None, source=None) -> manifest dict.
Decode helpers live in the torch-free ``toneserve.model_repository.runners.sensevoice_decode``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch

from toneserve.export import presets
from toneserve.export.artifacts import atomic_write_json, sha256_file, versions
from toneserve.export.errors import SourceError
from toneserve.export.family import LoadedModel, Manifest, Parity, loaded_weights_entry, source_entry
from toneserve.export.sensevoice_frontend import (
    FEAT_DIM,
    FRONTEND_CONF,
    FRONTEND_INPUTS,
    FRONTEND_OUTPUTS,
    export_frontend_onnx,
    load_cmvn,
    reference_features,
    standin_cmvn_text,
)
from toneserve.export.sensevoice_tokenizer import CTC_BLANK_ID, decode_assets, train_standin_bpe
from toneserve.export.variants import run_onnx
from toneserve.model_repository.runners.sensevoice_decode import FRAME_SHIFT_MS, NUM_QUERY_FRAMES

# funasr is imported inside the functions that use it: importing it takes seconds and prints notices.

OPSET = 17
SAMPLE_RATE = 16000

PRESETS = presets.SENSEVOICE
UNCONFIRMED = presets.SENSEVOICE_UNCONFIRMED
UNCONFIRMED_LOADED = presets.SENSEVOICE_UNCONFIRMED_LOADED
FUNASR_MODULE = "funasr.models.sense_voice.model"  # importing it registers the class

# What the exported frontend does that FunASR's WavFrontend, as the published config sets it up, does not.
DITHER_NOTE = (
    "dither 0: the published config.yaml leaves WavFrontend's dither at its default 1.0, which adds Gaussian "
    "noise (std 1 on the int16 scale) to every sample before the fbank, so FunASR's own features differ from "
    "run to run by that noise. The export computes them with dither 0: deterministic, and equal to FunASR's "
    "with dither=0 on speech; digital silence (exact zeros) then gives every mel bin the log-energy floor "
    "log(FLT_EPSILON) where FunASR would see the noise's level, so the encoder meets features on silence that "
    "it never saw in training (whatever it says there is not FunASR's)")

ENCODER_INPUTS = [
    {"name": "speech", "dtype": "float32", "shape": ["batch", "frames", FEAT_DIM]},
    {"name": "speech_lengths", "dtype": "int64", "shape": ["batch"]},
    {"name": "language", "dtype": "int64", "shape": ["batch"]},
    {"name": "textnorm", "dtype": "int64", "shape": ["batch"]},
]


def _encoder_outputs(vocab_size: int) -> list[dict[str, Any]]:
    return [
        {"name": "ctc_logits", "dtype": "float32", "shape": ["batch", "frames_plus_4", vocab_size]},
        {"name": "encoder_out_lens", "dtype": "int64", "shape": ["batch"]},
    ]


def build_model(preset: str, vocab_size: int, seed: int = 0):
    """FunASR SenseVoiceSmall of the preset's architecture with random weights, eval mode."""
    from toneserve.export.loading import model_class

    SenseVoiceSmall = model_class("SenseVoiceSmall", FUNASR_MODULE)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    torch.manual_seed(seed)
    model = SenseVoiceSmall(
        encoder="SenseVoiceEncoderSmall",
        encoder_conf=dict(cfg["encoder_conf"]),
        input_size=cfg["input_size"],
        vocab_size=int(vocab_size),
        blank_id=CTC_BLANK_ID,
        length_normalized_loss=True,
        sos=1,
        eos=2,
        ignore_id=-1,
    )
    # What sources.save_local_layout writes into config.yaml for this model.
    model.toneserve_encoder_conf = dict(cfg["encoder_conf"])
    model.toneserve_preset = preset
    return model.eval()


def _encoder_wrapper(model):
    from funasr.models.sense_voice.export_meta import export_forward

    class SenseVoiceEncoderExport(torch.nn.Module):
        """FunASR's export_forward with int64 IO (its dummy inputs use int32)."""

        def __init__(self, m):
            super().__init__()
            self.model = m

        def forward(self, speech, speech_lengths, language, textnorm):
            ctc_logits, lens = export_forward(
                self.model,
                speech,
                speech_lengths.to(torch.int64),
                language.to(torch.int64),
                textnorm.to(torch.int64),
            )
            return ctc_logits, lens.to(torch.int64)

    return SenseVoiceEncoderExport(model).eval()


def export_encoder_onnx(model, path: str | os.PathLike, opset: int = OPSET) -> None:
    wrapper = _encoder_wrapper(model)
    # Deliberately odd dummy shapes so no size is baked into the graph.
    speech = torch.randn(2, 37, FEAT_DIM, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([37, 21], dtype=torch.int64)
    language = torch.tensor([model.lid_dict["auto"], model.lid_dict["en"]], dtype=torch.int64)
    textnorm = torch.tensor([model.textnorm_dict["woitn"], model.textnorm_dict["withitn"]], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        # Harmless TorchScript-exporter note about Slice folding; the DeprecationWarning
        # for the legacy exporter is left visible on purpose.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            wrapper,
            (speech, lengths, language, textnorm),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[i["name"] for i in ENCODER_INPUTS],
            output_names=["ctc_logits", "encoder_out_lens"],
            dynamic_axes={
                "speech": {0: "batch", 1: "frames"},
                "speech_lengths": {0: "batch"},
                "language": {0: "batch"},
                "textnorm": {0: "batch"},
                "ctc_logits": {0: "batch", 1: "frames_plus_4"},
                "encoder_out_lens": {0: "batch"},
            },
            do_constant_folding=True,
        )


def encoder_torch(model, speech, speech_lengths, language, textnorm):
    """Run the exported forward in torch on numpy inputs -> (ctc_logits, lens) numpy."""
    wrapper = _encoder_wrapper(model)
    with torch.no_grad():
        logits, lens = wrapper(
            torch.from_numpy(np.ascontiguousarray(speech, dtype=np.float32)),
            torch.from_numpy(np.asarray(speech_lengths, dtype=np.int64)),
            torch.from_numpy(np.asarray(language, dtype=np.int64)),
            torch.from_numpy(np.asarray(textnorm, dtype=np.int64)),
        )
    return logits.numpy(), lens.numpy()


def _parity(stage: Path, model, cmvn: np.ndarray, seed: int) -> dict[str, float]:
    """Padded batch of mixed lengths through both ONNX models vs references."""
    rng = np.random.default_rng(seed + 1234)
    lens = [int(SAMPLE_RATE * s) for s in (0.7, 1.9, 1.3)]
    wav = np.zeros((len(lens), max(lens)), dtype=np.float32)
    for i, n in enumerate(lens):
        t = np.arange(n) / SAMPLE_RATE
        wav[i, :n] = 0.2 * np.sin(2 * np.pi * (180 + 90 * i) * t) + 0.02 * rng.standard_normal(n)
    front = run_onnx(stage / "frontend.onnx", {"wav": wav, "wav_lens": np.asarray(lens, dtype=np.int64)}, threads=1)
    feats, feat_lens = front["feats"], front["feat_lens"]
    fe_err = 0.0
    for i, n in enumerate(lens):
        ref = reference_features(wav[i, :n], cmvn)
        if ref.shape[0] != int(feat_lens[i]):
            raise RuntimeError(f"frontend frame count {feat_lens[i]} != reference {ref.shape[0]}")
        fe_err = max(fe_err, float(np.abs(feats[i, : ref.shape[0]] - ref).max()))

    language = np.asarray([model.lid_dict["auto"], model.lid_dict["zh"], model.lid_dict["en"]], dtype=np.int64)
    textnorm = np.asarray([model.textnorm_dict["woitn"]] * 3, dtype=np.int64)
    inputs = {"speech": feats, "speech_lengths": feat_lens, "language": language, "textnorm": textnorm}
    encoded = run_onnx(stage / "encoder.onnx", inputs, threads=1)
    o_logits, o_lens = encoded["ctc_logits"], encoded["encoder_out_lens"]
    t_logits, t_lens = encoder_torch(model, feats, feat_lens, language, textnorm)
    if not np.array_equal(o_lens, t_lens):
        raise RuntimeError(f"encoder_out_lens differ: onnx {o_lens} torch {t_lens}")
    enc_err = max(float(np.abs(o_logits[i, :n] - t_logits[i, :n]).max()) for i, n in enumerate(o_lens))
    return {"frontend_vs_kaldi_native_fbank": fe_err, "encoder_onnx_vs_torch": enc_err}


# Largest absolute error allowed: fbank features (log mel after CMVN) and CTC logits.
PARITY_GATES = {"frontend_vs_kaldi_native_fbank": 1e-3, "encoder_onnx_vs_torch": 1e-3}


def export_onnx(
    out_dir: Path,
    preset: str = "tiny",
    seed: int = 0,
    bpe_model: Path | None = None,
    cmvn_file: Path | None = None,
    verify: bool = True,
    *,
    loaded: LoadedModel | None = None,
    source: dict | None = None,
) -> dict:
    """Write frontend.onnx, encoder.onnx, am.mvn, bpe.model, decode_assets.json, manifest.json.

    Everything is built in a staging folder inside ``out_dir`` and moved into place with os.replace,
    manifest.json last: a failure never leaves a half-written file, and a manifest always describes
    complete files (its sha256s can be checked).
    ``bpe_model``: the real tokenizer (copied); without it a stand-in is trained.
    ``cmvn_file``: a real am.mvn (copied); without it a plausible one is generated.
    ``loaded``: a SenseVoiceSmall folder as the family loaded it: its weights, tokenizer and am.mvn replace
    the random ones (``preset``, ``bpe_model`` and ``cmvn_file`` are then not given; the manifest's
    ``preset`` says which preset's size config.yaml has, or "custom").
    ``source``: recorded in the manifest (default: local folder or random ``preset``).
    ``verify``: run a padded mixed-length batch through both ONNX models; the max errors vs
    kaldi-native-fbank/FunASR and vs torch are the manifest's ``parity`` and must pass its gate.
    """
    if loaded is not None:
        if bpe_model is not None or cmvn_file is not None:
            raise ValueError("give either a loaded folder or bpe_model/cmvn_file: the model folder "
                             "brings its own tokenizer and am.mvn")
        preset = loaded.preset
        bpe_model, cmvn_file = loaded.files.bpe_model, loaded.files.cmvn
        cfg = {k: loaded.arch_config[k] for k in ("encoder", "encoder_conf", "input_size")}
        cfg["source"] = str(loaded.files.config)
    elif preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    else:
        cfg = PRESETS[preset]
    source = source_entry(source, None if loaded is None else loaded.files.root, preset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stage = Path(tempfile.mkdtemp(prefix=".sensevoice-staging-", dir=out_dir))
    try:
        # Tokenizer
        if bpe_model is not None:
            shutil.copyfile(bpe_model, stage / "bpe.model")
            tokenizer_origin = "model"
        else:
            train_standin_bpe(stage / "bpe.model", cfg["vocab_size"], seed=seed)
            tokenizer_origin = "stand-in"
        vocab_size = spm.SentencePieceProcessor(model_file=str(stage / "bpe.model")).GetPieceSize()

        # CMVN
        if cmvn_file is not None:
            shutil.copyfile(cmvn_file, stage / "am.mvn")
            cmvn_origin = "model"
        else:
            (stage / "am.mvn").write_text(standin_cmvn_text(seed), encoding="utf-8")
            cmvn_origin = "generated"
        cmvn = load_cmvn(stage / "am.mvn")

        # Models
        if loaded is None:
            model = build_model(preset, vocab_size, seed=seed)
        else:
            model = loaded.model
            if int(model.ctc.ctc_lo.out_features) != vocab_size:
                raise SourceError(f"{loaded.files.weights}: CTC head has {model.ctc.ctc_lo.out_features} "
                                  f"outputs, tokenizer {loaded.files.bpe_model} {vocab_size} pieces")
        export_frontend_onnx(cmvn, stage / "frontend.onnx", opset=OPSET)
        export_encoder_onnx(model, stage / "encoder.onnx", opset=OPSET)

        assets = decode_assets(
            stage / "bpe.model",
            blank_id=int(model.blank_id),
            lid_dict=dict(model.lid_dict),
            textnorm_dict=dict(model.textnorm_dict),
        )
        assets.pop("bpe_model_path")  # absolute staging path; the json stays relocatable
        assets["bpe_model"] = "bpe.model"
        atomic_write_json(stage / "decode_assets.json", assets)

        parity = None
        if verify:
            errors = _parity(stage, model, cmvn, seed)
            parity = Parity(reference="frontend: FunASR's fbank (kaldi-native-fbank, dither 0) + LFR/CMVN; "
                                      "encoder: FunASR's export_forward in torch",
                            max_abs_err=errors, gates=dict(PARITY_GATES),
                            inputs="padded batch of 0.7, 1.9 and 1.3 s, languages auto/zh/en")
            if not parity.passed():
                raise RuntimeError(f"ONNX parity gate failed: {parity}")

        names = ["frontend.onnx", "encoder.onnx", "am.mvn", "bpe.model", "decode_assets.json"]
        unconfirmed = list((UNCONFIRMED if loaded is None else UNCONFIRMED_LOADED).get(preset, []))
        if tokenizer_origin == "stand-in":
            unconfirmed.append(
                "tokenizer is a stand-in BPE: piece ids differ from the real SenseVoice tokenizer; "
                "only tag names and the blank id carry over")
        manifest = Manifest(
            model="sensevoice", preset=preset, source=source, seed=seed,
            files={n: sha256_file(stage / n) for n in names},
            graphs={"frontend.onnx": {"inputs": FRONTEND_INPUTS, "outputs": FRONTEND_OUTPUTS},
                    "encoder.onnx": {"inputs": ENCODER_INPUTS, "outputs": _encoder_outputs(vocab_size)}},
            parity=None if parity is None else asdict(parity),
            serving={
                "vocab_size": vocab_size, "blank_id": assets["blank_id"], "sample_rate": SAMPLE_RATE,
                "frame_shift_ms": FRAME_SHIFT_MS, "feat_dim": FEAT_DIM, "frontend": FRONTEND_CONF,
                "ctc_output": "logits", "query_frames": NUM_QUERY_FRAMES,
                "query_order": ["language", "emotion", "event", "textnorm"],
                "language_query_ids": assets["language_query_ids"],
                "textnorm_query_ids": assets["textnorm_query_ids"],
                "tokenizer_origin": tokenizer_origin, "cmvn_origin": cmvn_origin,
                "short_input": "items shorter than 400 samples (25 ms) give 0 frames",
            },
            config={"encoder": cfg.get("encoder", "SenseVoiceEncoderSmall"), **cfg["encoder_conf"],
                    "input_size": cfg["input_size"]},
            config_source=cfg["source"],
            unconfirmed=unconfirmed,
            exporter={"torch.onnx.export": "dynamo=False", "opset": OPSET,
                      "encoder_forward": "funasr.models.sense_voice.export_meta.export_forward"},
            versions=versions(), export_seconds=round(time.perf_counter() - t0, 3),
            weights=None if loaded is None else loaded_weights_entry(loaded),
            notes={"dither": DITHER_NOTE},
        ).to_dict()
        for n in names:
            os.replace(stage / n, out_dir / n)
        atomic_write_json(out_dir / "manifest.json", manifest)
        return manifest
    finally:
        shutil.rmtree(stage, ignore_errors=True)


__all__ = [
    "ENCODER_INPUTS",
    "PRESETS",
    "build_model",
    "encoder_torch",
    "export_encoder_onnx",
    "export_onnx",
    "sha256_file",
]
