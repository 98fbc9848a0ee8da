"""The gates a derived graph of an exported model is judged by against ONNX Runtime fp32 on the family's parity
inputs: OpenVINO's precisions (``openvino_variants``) and ONNX Runtime's dynamic int8 variant (``build``).

A classifier (``gate_kind`` "classification") must keep every clip's label and its probabilities within 0.02; a
CTC encoder ("ctc_frames") must keep >= 97 % of the valid frames' top-1 tokens; "fp32" (OpenVINO's f32: the same
arithmetic, other kernels) a max abs difference <= 1e-4. A classifier's probabilities are the softmax of its top-1
output, or that output itself when the family names it among its ``probability_outputs`` (a graph that outputs
probabilities, not logits).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from toneserve.export.families import get
from toneserve.export.family import ModelFamily
from toneserve.export.variants import compare_outputs, max_abs_diff

# Every number a derived graph is judged by, in one place: "fp32", and the gate kinds a family names.
GATES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4},
    "classification": {"min_top1_agreement": 1.0, "max_prob_diff": 0.02},
    "ctc_frames": {"min_top1_agreement": 0.97},
}


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def gate_report(family: ModelFamily, reference: dict, candidate: dict, feeds: dict, options: dict) -> dict:
    """``compare_outputs``'s report; for a classifier also the largest difference of its probabilities (the
    softmax of its top-1 outputs, or those outputs as they are when the family says they are probabilities)."""
    report = compare_outputs(reference, candidate, feeds=feeds, **options)
    if family.gate_kind == "classification":
        already = set(getattr(family, "probability_outputs", ()))
        for name, axis in options.get("top1_axis", {}).items():
            ref = np.asarray(reference[name], np.float64)
            cand = np.asarray(candidate[name], np.float64)
            if name not in already:
                ref, cand = _softmax(ref, axis), _softmax(cand, axis)
            diff = np.abs(ref - cand)
            report[name]["max_prob_diff"] = float(diff.max()) if np.isfinite(diff).all() else None
    return report


def _sound(report: dict) -> bool:
    """Every output finite and every integer output (lengths) exact."""
    return all(e.get("exact", True) and e.get("finite", True) for e in report.values())


def judge(family_name: str, report: dict, precision: str = "int8") -> tuple[bool, dict]:
    """Whether a parity report against ONNX Runtime fp32 passes its gate: ``GATES["fp32"]`` for
    ``precision="fp32"``, else the gate of the family's ``gate_kind``. Returns (passed, gate) where
    gate names its kind, its limits and what was measured."""
    kind = "fp32" if precision == "fp32" else get(family_name).gate_kind
    if kind not in GATES:
        raise ValueError(f"{family_name} has no parity gate")
    limits = GATES[kind]
    gate: dict[str, Any] = {"kind": kind, **limits}
    passed = _sound(report)
    if kind == "fp32":
        worst = max_abs_diff(report)
        gate["measured_max_abs_diff"] = worst if np.isfinite(worst) else None
        return passed and worst <= limits["max_abs_diff"], gate
    judged = {name: e for name, e in report.items() if "top1_agreement" in e}
    if not judged:
        return False, {**gate, "reason": "the report has no top-1 agreement to judge"}
    agreement = min(e["top1_agreement"] for e in judged.values())
    gate["measured_top1_agreement"] = agreement
    passed = passed and agreement >= limits["min_top1_agreement"]
    if "max_prob_diff" in limits:
        diffs = [e.get("max_prob_diff") for e in judged.values()]
        prob_diff = None if any(d is None for d in diffs) else max(diffs)
        gate["measured_max_prob_diff"] = prob_diff
        passed = passed and prob_diff is not None and prob_diff <= limits["max_prob_diff"]
    return bool(passed), gate
