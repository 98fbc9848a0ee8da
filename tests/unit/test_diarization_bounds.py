"""Speaker clustering (gateway/diarization.py) without a model: a 4-hour call's worth of windows in bounded
memory. On real voices: tests/export/test_diarization_voices.py."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

from toneserve.gateway import diarization as dz
from toneserve.gateway.diarization import cluster


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of items whose label's majority reader is their own reader."""
    good = 0
    for label in np.unique(labels):
        _, counts = np.unique(truth[labels == label], return_counts=True)
        good += counts.max()
    return good / len(labels)


def synthetic(n: int, speakers: int, dim: int = 256, seed: int = 0):
    """n unit vectors in runs of one speaker each (4-20 units) around `speakers` centres, spread like GE2E
    1.5 s windows: mean cosine distance ~0.2 within a speaker, ~0.5 between speakers."""
    rng = np.random.default_rng(seed)
    centres = dz._normalise(rng.standard_normal(dim) + rng.standard_normal((speakers, dim)))
    truth = np.empty(n, np.int64)
    index = 0
    while index < n:
        run = int(rng.integers(4, 21))
        truth[index:index + run] = rng.integers(speakers)
        index += run
    noise = dz._normalise(rng.standard_normal((n, dim)).astype(np.float32))
    return dz._normalise(centres[truth] + 0.5 * noise), truth


def test_twenty_thousand_windows_in_bounded_memory():
    embeddings, truth = synthetic(20_000, 4)
    durations = np.full(len(embeddings), 1.5)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        labels = cluster(embeddings, durations)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a dense 20k x 20k float64 matrix would be 3.2 GB (its condensed half 1.6 GB); the input is 20 MB
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert len(np.unique(labels)) == 4 and purity(labels, truth) >= 0.99
    print(f"20,000 units: {seconds:.1f} s, peak {peak / 2**20:.1f} MiB")


def test_the_tree_is_scipy_s_average_linkage():
    """Below one block, without the duration rules, `cluster` cut at a threshold is exactly scipy's average
    linkage on cosine distance cut at the same height (the gateway's own code is checked against the
    maintained implementation; it exists to cluster in blocks and to weigh merged groups by their members)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    embeddings, _ = synthetic(300, 5, seed=3)
    ours = cluster(embeddings, np.full(len(embeddings), 2.0), threshold=dz.THRESHOLD, reliable_s=0.0,
                   merge_small=False)
    theirs = fcluster(linkage(embeddings.astype(np.float64), method="average", metric="cosine"),
                      t=dz.THRESHOLD, criterion="distance")
    # the same partition, whatever the numbering
    pairs = set(zip(ours.tolist(), theirs.tolist()))
    assert len(pairs) == len(set(ours.tolist())) == len(set(theirs.tolist())) >= 2
