"""FunASR's own emotion2vec inference for one unpadded utterance: the ground truth the exported wrapper is
checked against."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def funasr_reference(model: nn.Module, wav_1d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logits[9], embedding[D])`` exactly as ``Emotion2vec.inference`` computes them for one
    utterance, before its softmax: ``F.layer_norm`` over the whole waveform when
    ``cfg.normalize``, ``extract_features(padding_mask=None)``, mean over frames (numpy, as
    FunASR saves ``feats``), ``proj(x.mean(dim=1))``."""
    source = torch.from_numpy(np.ascontiguousarray(wav_1d, dtype=np.float32))
    if model.cfg.normalize:
        source = F.layer_norm(source, source.shape)
    source = source.view(1, -1)
    x = model.extract_features(source, padding_mask=None)["x"]
    embedding = np.mean(x.squeeze(0).cpu().numpy(), axis=0)
    logits = model.proj(x.mean(dim=1))[0].cpu().numpy()
    return logits, embedding
