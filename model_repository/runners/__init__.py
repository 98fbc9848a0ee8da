"""The code that runs inside tritonserver (Python backend).

Each file here is copied flat into the rendered model repository (a runner as `model.py`, its
helpers beside it), so they import one another by plain module name and nothing but the standard
library, numpy and their inference runtime (onnxruntime, sentencepiece), and toneserve.contract,
which the renderer copies beside them as `contract.py`: never torch, never the rest of toneserve. This package exists so that build-time code and tests can import the same
helpers (CTC decoding, the VAD core) that serving runs.
"""
