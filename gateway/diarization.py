"""Speaker diarization of a mono channel: clustering speaker embeddings (numpy only).

The ``speaker`` model on Triton gives an L2-normalised 256-d embedding (Resemblyzer's GE2E encoder) of
any clip; the gateway embeds its units (VAD utterances, or pieces of them) and asks here who spoke which:

* ``cluster``: labels for all units of a recording at once (agglomerative clustering, average linkage on
  cosine distance, as scikit-learn's/scipy's, cut at ``THRESHOLD`` or at the number of speakers a request
  gives). The units the gateway gives it: its VAD utterances, those of 3 s or more cut where
  ``change_points`` finds a change (gateway/speakers.py), one embedding per piece. Units shorter than
  ``RELIABLE_S`` give noisy embeddings: they are left out of the tree and join the nearest cluster after.
  Many units (a 4-hour call cut in 1.5 s windows is ~20,000) are clustered in stages: consecutive blocks
  of ``BLOCK`` units are first merged into tight groups (``PRE_THRESHOLD``), then the groups are clustered
  by exact average linkage over their members, so memory is O(BLOCK^2 + N D), not a dense N x N matrix.
* ``change_points``: where, inside one utterance, another speaker takes over (binary segmentation over
  its sliding-window embeddings), so the utterance can be split before it is transcribed.
* ``OnlineClusters``: provisional labels for a live stream as its segments arrive (nearest centroid, or a
  new speaker past ``ONLINE_THRESHOLD``); ``final()`` re-labels everything with ``cluster``.

No "fewer than N units means one speaker" rule: two units are two speakers when their embeddings are
that far apart (FunASR's spectral clustering calls anything under 20 windows one speaker).

The constants were measured with loadtest/diarization_tune.py on the LibriSpeech conversations of
loadtest/diarization_corpus.py (seed 0: 12 conversations of 2-4 real readers, 30-60 s, 16 kHz and 8 kHz
copies), running the gateway's own pipeline (silero VAD at the default thresholds, Resemblyzer embeddings
of each VAD utterance, these functions) and scoring DER with a 0.25 s collar, overlap not scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cosine distance (mean over pairs: average linkage) at which clustering stops merging when no count is
# given. Swept 0.20-0.60 in steps of 0.025 on the 12 16 kHz conversations with the recipe the gateway runs
# (VAD utterances of 3 s or more cut at change_points over 1.5 s / 0.75 s windows, one embedding per
# piece): best at 0.375, DER 10.9 % (missed 8.4, false alarm 0.0, confusion 2.4), speaker count right on
# 11/12 files; the 8 kHz copies at 0.375: DER 15.4 %, count 9/12. Neighbours: 0.35 gives 11.3 % / 10/12
# (8 kHz 11.7 % / 10/12), 0.40 11.4 % / 10/12 (8 kHz 15.4 % / 9/12), 0.425 12.3 % (8 kHz 27.8 %: 8 kHz
# voices lie closer together, so thresholds above 0.40 merge speakers there). Chosen: 0.35, the best over
# both rates (mean DER 11.5 % against 13.2 % at 0.375, the same 20 of 24 counts): telephone audio is 8 kHz.
THRESHOLD = 0.35
# Units shorter than this (seconds of audio) are assigned after clustering, to the nearest centroid.
# Measured on whole VAD utterances (many under 1 s), each at its best threshold: all units in the tree
# gives DER 18.6 % / count 8/12 against 16.7 % / 10/12 with the short ones held out.
RELIABLE_S = 1.0
# With no count given, a cluster holding less than MIN_CLUSTER_S seconds of audio and under MIN_SHARE of
# the recording's is folded into its nearest neighbour (a real speaker rarely says only that little).
# Measured on whole utterances: count right 10/12 with it, 9/12 without (DER 16.7 vs 17.0 %). Larger
# values (4 or 6 s, 10 or 20 %) were tried on the gateway's recipe: never better, 6 s / 20 % worse.
MIN_CLUSTER_S = 2.0
MIN_SHARE = 0.04
# Staged clustering: at most this many units (or groups) go into one average-linkage pass, whose distance
# matrix is BLOCK x BLOCK float64 (2 MB at 512). Consecutive blocks are first merged at PRE_THRESHOLD,
# tighter than THRESHOLD; the pass over the groups is exact average linkage on their members (see
# _upgma), so staging only forbids splitting a tight group. Measured: the 1.5 s window recipe with
# BLOCK = 16 (staging on every file) gives the same DER and counts as one pass at every threshold from
# 0.35 up (the 1.5 s windows of a 4-hour call, ~20,000 units, are staged).
BLOCK = 512
PRE_THRESHOLD = 0.25
# change_points: cosine distance between the mean window embeddings either side of a candidate boundary
# that counts as a change of speaker, and the fewest windows on each side. Measured (utterances of 3 s or
# more searched, pieces re-embedded and clustered, each at its best threshold): 0.25, 0.30 and 0.35 all
# give DER 10.9 % / 11 of 12 at 16 kHz, 0.40 11.5 %; at 8 kHz 0.30 is best (15.4 %, 0.25: 15.5 %,
# 0.35: 16.7 %, 0.40: 17.6 %).
CHANGE_THRESHOLD = 0.30
CHANGE_MIN_WINDOWS = 2
# OnlineClusters: cosine distance to the nearest centroid beyond which a new speaker starts. Measured on
# the 1.5 s windows fed in time order: 0.35 gives DER 12.5 % / count 10/12 at 16 kHz (8 kHz 16.8 % /
# 7/12); 0.325 12.8 % / 6/12, 0.375 15.7 % / 9/12, 0.40 20.1 % / 6/12.
ONLINE_THRESHOLD = 0.35


@dataclass(frozen=True)
class Hints:  # 0 = not given
    expected: int = 0
    min_speakers: int = 0
    max_speakers: int = 0


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in order of first appearance."""
    labels = np.asarray(labels)
    out = np.empty(len(labels), dtype=np.int64)
    mapping: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        out[index] = mapping.setdefault(label, len(mapping))
    return out


def _bounds(n: int, hints: Hints, limit: int) -> tuple[int, int, int]:
    """(expected or 0, lowest, highest) speaker counts allowed for n units."""
    top = max(1, min(n, limit if limit > 0 else n))
    if hints.expected > 0:
        k = min(hints.expected, top)
        return k, k, k
    low = min(max(hints.min_speakers, 1), top)
    high = min(hints.max_speakers, top) if hints.max_speakers > 0 else top
    return 0, low, max(low, high)


def _centroids(embeddings: np.ndarray, weights: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Weighted mean direction of each label's vectors, in chunks (no [N, D] float64 temporary)."""
    sums = np.zeros((k, embeddings.shape[1]), np.float64)
    for start in range(0, len(embeddings), 4096):
        part = slice(start, start + 4096)
        np.add.at(sums, labels[part], embeddings[part] * weights[part, None].astype(np.float32))
    return _normalise(sums)


def _upgma(sums: np.ndarray, counts: np.ndarray, threshold: float, low: int, high: int) -> np.ndarray:
    """Average-linkage (UPGMA) clustering on cosine distance of groups of unit vectors, each given by the
    sum of its vectors and their count: flat labels 0.. of the groups.

    The mean pairwise cosine distance between the members of two groups is 1 - S_a . S_b / (n_a n_b), so
    groups merged beforehand lose nothing: this is scipy's ``linkage(method="average", metric="cosine")``
    on the members, constrained to keep each group together (and the same on single vectors). Merging goes
    on while the closest pair is within `threshold` and more than `low` clusters remain, or while more than
    `high` remain (average linkage has no inversions, so this is the dendrogram cut at that count).
    Memory: one [G, G] float64 matrix (2 MB at G = BLOCK = 512)."""
    g = len(sums)
    if g == 1:
        return np.zeros(1, np.int64)
    sums = np.asarray(sums, np.float64).copy()
    counts = np.asarray(counts, np.float64).copy()
    dist = 1.0 - (sums @ sums.T) / np.outer(counts, counts)
    np.fill_diagonal(dist, np.inf)
    owner = np.arange(g)  # the surviving group each group was merged into
    alive = np.ones(g, bool)
    k = g
    while k > 1:
        i, j = divmod(int(np.argmin(dist)), g)
        if not (k > high or (k > low and dist[i, j] <= threshold)):
            break
        i, j = min(i, j), max(i, j)
        sums[i] += sums[j]
        counts[i] += counts[j]
        owner[owner == j] = i
        alive[j] = False
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        row = np.where(alive, 1.0 - (sums @ sums[i]) / (counts * counts[i]), np.inf)
        row[i] = np.inf
        dist[i, :] = row
        dist[:, i] = row
        k -= 1
    return np.unique(owner, return_inverse=True)[1].astype(np.int64)


def _groups(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight groups of units from consecutive blocks, repeated until at most BLOCK remain:
    (group of each unit, group sums of unit vectors, group unit counts)."""
    member = np.arange(len(embeddings))
    sums: np.ndarray = embeddings  # float32 until the first merge (no copy); blocks are taken in float64
    counts: np.ndarray = np.ones(len(embeddings))
    while len(sums) > BLOCK:
        labels = np.empty(len(sums), np.int64)
        offset = 0
        for start in range(0, len(sums), BLOCK):
            stop = min(start + BLOCK, len(sums))
            local = _upgma(sums[start:stop], counts[start:stop], PRE_THRESHOLD, 1, stop - start)
            labels[start:stop] = local + offset
            offset += int(local.max()) + 1
        if offset == len(sums):  # nothing merged at this threshold: pair neighbours instead
            labels = np.arange(len(sums)) // 2
            offset = int(labels[-1]) + 1
        new_sums = np.zeros((offset, sums.shape[1]))
        for start in range(0, len(sums), 4096):
            np.add.at(new_sums, labels[start:start + 4096], sums[start:start + 4096])
        counts = np.bincount(labels, weights=counts, minlength=offset)
        sums = new_sums
        member = labels[member]
    return member, sums, counts


def _merge_small(points: np.ndarray, mass: np.ndarray, labels: np.ndarray, low: int) -> np.ndarray:
    """Fold clusters with too little audio into their nearest neighbour (while more than `low` remain)."""
    labels = labels.copy()
    total = float(mass.sum())
    while True:
        ids = np.unique(labels)
        if len(ids) <= max(low, 1):
            return labels
        seconds = np.array([mass[labels == i].sum() for i in ids])
        small = np.flatnonzero((seconds < MIN_CLUSTER_S) & (seconds < MIN_SHARE * total))
        if not len(small):
            return labels
        worst = ids[small[np.argmin(seconds[small])]]
        centres = _centroids(points, mass, np.searchsorted(ids, labels), len(ids))
        own = int(np.searchsorted(ids, worst))
        similarity = centres @ centres[own]
        similarity[own] = -np.inf
        labels[labels == worst] = ids[int(np.argmax(similarity))]


def cluster(embeddings: np.ndarray, durations: np.ndarray, hints: Hints = Hints(), *, limit: int = 30,
            threshold: float = THRESHOLD, reliable_s: float = RELIABLE_S, merge_small: bool = True) -> np.ndarray:
    """Speaker labels of N units in time order: int [N], 0..K-1 in order of first appearance.

    `embeddings` [N, D] (normalised again here), `durations` [N] seconds. `hints.expected` fixes K;
    otherwise K is where average linkage passes `threshold`, clamped into [min_speakers, max_speakers];
    `limit` caps K in every case. Units shorter than `reliable_s` join the nearest cluster afterwards
    (all units are clustered when fewer than two are long enough). Without `hints.expected`, clusters
    with little audio (MIN_CLUSTER_S, MIN_SHARE) fold into their nearest one unless `merge_small` is off."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, np.int64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {embeddings.shape}")
    durations = np.asarray(durations, dtype=np.float64).reshape(-1)
    if len(durations) != n:
        raise ValueError(f"{len(durations)} durations for {n} embeddings")
    if n == 1:
        return np.zeros(1, np.int64)
    embeddings = _normalise(embeddings)
    weights = np.clip(durations, 1e-3, None)
    reliable = np.flatnonzero(durations >= reliable_s)
    if len(reliable) < 2:
        reliable = np.arange(n)
    expected, low, high = _bounds(len(reliable), hints, limit)

    chosen = embeddings if len(reliable) == n else embeddings[reliable]
    member, sums, counts = _groups(chosen)
    group_labels = _upgma(sums, counts, threshold, low, high)
    if merge_small and not expected and len(sums) > 1:
        seconds = np.bincount(member, weights=weights[reliable], minlength=len(sums))
        group_labels = _merge_small(_normalise(sums), seconds, group_labels, low)
        group_labels = np.unique(group_labels, return_inverse=True)[1]
    k = int(group_labels.max()) + 1
    reliable_labels = group_labels[member]
    centres = _centroids(chosen, weights[reliable], reliable_labels, k)
    labels = np.empty(n, np.int64)
    labels[reliable] = reliable_labels
    rest = np.setdiff1d(np.arange(n), reliable, assume_unique=True)
    for start in range(0, len(rest), 4096):  # bounded: [4096, K] similarities at a time
        part = rest[start:start + 4096]
        labels[part] = np.argmax(embeddings[part] @ centres.T, axis=1)
    return first_appearance(labels)


def change_points(window_embeddings: np.ndarray, threshold: float = CHANGE_THRESHOLD, *,
                  min_windows: int = CHANGE_MIN_WINDOWS, straddle: int = 1) -> list[int]:
    """Indices of the windows where another speaker starts, in one utterance's consecutive windows
    (e.g. 1.5 s windows every 0.75 s); empty: one speaker.

    Index i means the change lies about where window i starts (split the audio at i x shift): window i
    and those after it are the new speaker's, windows before i - `straddle` the old one's; the
    `straddle` windows between overlap the change (1 for windows that overlap by half) and are ignored.
    Binary segmentation: the boundary whose two sides' mean embeddings are furthest apart is taken if
    that cosine distance exceeds `threshold`, then each side is searched again; each side needs at least
    `min_windows` windows."""
    if len(window_embeddings) == 0:
        return []
    windows = _normalise(np.asarray(window_embeddings, dtype=np.float32).reshape(len(window_embeddings), -1))
    found: list[int] = []

    def search(lo: int, hi: int) -> None:  # windows lo..hi-1
        best, best_i = -1.0, -1
        for i in range(lo + min_windows + straddle, hi - min_windows + 1):
            left = windows[lo:i - straddle].sum(axis=0)
            right = windows[i:hi].sum(axis=0)
            distance = 1.0 - float(left @ right) / max(float(np.linalg.norm(left) * np.linalg.norm(right)), 1e-12)
            if distance > best:
                best, best_i = distance, i
        if best_i >= 0 and best > threshold:
            found.append(best_i)
            search(lo, best_i - straddle)
            search(best_i, hi)

    if len(windows) >= 2 * min_windows + straddle:
        search(0, len(windows))
    return sorted(found)


class OnlineClusters:
    """Provisional speaker labels for a live stream: each segment joins the nearest speaker's centroid
    unless it is further than `threshold` from all of them (then it is a new speaker, while fewer than
    the cap). Segments shorter than RELIABLE_S never open a speaker once one exists. Labels are 0.. in
    order of first appearance and never change once given; `final()` re-clusters everything seen."""

    def __init__(self, hints: Hints = Hints(), *, limit: int = 30, threshold: float = ONLINE_THRESHOLD):
        self.hints = hints
        self.limit = limit
        self.threshold = threshold
        cap = hints.expected or hints.max_speakers or limit
        self.cap = max(1, min(cap, limit) if limit > 0 else cap)
        self.sums: list[np.ndarray] = []
        self.embeddings: list[np.ndarray] = []
        self.durations: list[float] = []
        self.labels: list[int] = []

    def add(self, embedding: np.ndarray, duration: float) -> int:
        vector = _normalise(np.asarray(embedding, dtype=np.float32).reshape(-1)).astype(np.float64)
        weight = max(float(duration), 1e-3)
        if self.sums:
            centres = _normalise(np.stack(self.sums))
            similarity = centres @ vector
            nearest = int(np.argmax(similarity))
            opens = (1.0 - float(similarity[nearest]) > self.threshold and len(self.sums) < self.cap
                     and duration >= RELIABLE_S)
            label = len(self.sums) if opens else nearest
        else:
            label = 0
        if label == len(self.sums):
            self.sums.append(np.zeros_like(vector))
        self.sums[label] += vector * weight
        self.embeddings.append(vector.astype(np.float32))
        self.durations.append(float(duration))
        self.labels.append(label)
        return label

    def final(self) -> np.ndarray:
        """Labels of every segment so far by `cluster` (the whole stream seen: may differ from add's)."""
        if not self.embeddings:
            return np.zeros(0, np.int64)
        return cluster(np.stack(self.embeddings), np.array(self.durations), self.hints, limit=self.limit)


__all__ = ["BLOCK", "CHANGE_MIN_WINDOWS", "CHANGE_THRESHOLD", "Hints", "MIN_CLUSTER_S", "MIN_SHARE",
           "ONLINE_THRESHOLD", "OnlineClusters", "PRE_THRESHOLD", "RELIABLE_S", "THRESHOLD", "change_points",
           "cluster", "first_appearance"]
