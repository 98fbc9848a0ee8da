"""Speaker clustering (gateway/diarization.py) on real voices, hints, short and very long inputs.

Embeddings are Resemblyzer's (the `speaker` model's reference) of the LibriSpeech clips in
tests/data/librispeech: 3 s chunks of every clip, 1.5 s / 0.75 s windows of two utterances, computed once
per module in a child process (about 10 s; its own torch threads) and read back as numpy arrays. The
synthetic checks, without a model, are the unit tier's (tests/unit/test_diarization_bounds.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_diarization_bounds import purity
from toneserve.gateway import diarization as dz
from toneserve.gateway.diarization import Hints, OnlineClusters, change_points, cluster

CLIPS = Path(__file__).resolve().parents[1] / "data" / "librispeech"
CHUNK_S = 3.0

EMBED = r"""
import json, sys
from pathlib import Path
import numpy as np, soundfile as sf, torch
from resemblyzer import VoiceEncoder
torch.set_num_threads(2)
clips, out, chunk = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
encoder = VoiceEncoder("cpu", verbose=False)
audio = {p.stem: sf.read(p, dtype="float32")[0] for p in sorted(clips.glob("*.flac"))}
embeddings, readers, durations = [], [], []
for name, wav in audio.items():
    n = int(chunk * 16000)
    for start in range(0, len(wav) - n + 1, n):  # one length only: torch's CPU kernels are set up per shape
        piece = wav[start:start + n]
        embeddings.append(encoder.embed_utterance(piece))
        readers.append(name.split("-")[0])
        durations.append(len(piece) / 16000)
def windows(wav):
    w, s = 24000, 12000
    return np.array([encoder.embed_utterance(wav[a:a + w]) for a in range(0, len(wav) - w + 1, s)])
# one utterance of two voices: 6 s of a man, then 6 s of a woman (the change at 6.0 s = window 8)
two = np.concatenate([audio["1688-142285-0000"][:96000], audio["3331-159605-0000"][:96000]])
one = audio["2414-128291-0002"][:192000]
np.savez(out, embeddings=np.array(embeddings), readers=np.array(readers), durations=np.array(durations),
         two=windows(two), one=windows(one))
"""


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    out = tmp_path_factory.mktemp("voices") / "embeddings.npz"
    subprocess.run([sys.executable, "-c", EMBED, str(CLIPS), str(out), str(CHUNK_S)], check=True, timeout=300)
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def pick(voices, readers: list[str], per_reader: int = 8):
    """Chunks of `readers`, interleaved as turns of a conversation: (embeddings, durations, true reader)."""
    rows = {r: np.flatnonzero(voices["readers"] == r)[:per_reader] for r in readers}
    order = [rows[r][i] for i in range(per_reader) for r in readers if i < len(rows[r])]
    return voices["embeddings"][order], voices["durations"][order], voices["readers"][order]


# Two men and two women, the pairs far apart (mean cosine distance 0.38-0.53 between their 3 s chunks).
READERS = ["2414", "3331", "2609", "533"]


@pytest.mark.parametrize("speakers", [1, 2, 3, 4])
def test_cluster_finds_the_speakers(voices, speakers):
    embeddings, durations, truth = pick(voices, READERS[:speakers])
    labels = cluster(embeddings, durations)
    assert labels.dtype.kind == "i" and labels.shape == (len(truth),)
    assert len(np.unique(labels)) == speakers
    assert purity(labels, truth) >= 0.9
    # numbered in order of first appearance
    firsts = [int(labels[np.argmax(labels == k)]) for k in np.unique(labels)]
    assert labels[0] == 0 and sorted(np.argmax(labels == k) for k in range(speakers)) == sorted(
        np.argmax(labels == k) for k in firsts)
    assert list(dict.fromkeys(labels.tolist())) == list(range(speakers))


def test_all_ten_readers(voices):
    readers = sorted(set(voices["readers"].tolist()))
    embeddings, durations, truth = pick(voices, readers, per_reader=6)
    labels = cluster(embeddings, durations, Hints(expected=10))
    assert len(np.unique(labels)) == 10
    assert purity(labels, truth) >= 0.8


def test_hints(voices):
    embeddings, durations, truth = pick(voices, READERS[:2])
    assert len(np.unique(cluster(embeddings, durations, Hints(expected=3)))) == 3
    assert len(np.unique(cluster(embeddings, durations, Hints(expected=1)))) == 1
    assert len(np.unique(cluster(embeddings, durations, Hints(min_speakers=3)))) >= 3
    embeddings4, durations4, _ = pick(voices, READERS)
    assert len(np.unique(cluster(embeddings4, durations4, Hints(max_speakers=2)))) <= 2
    assert len(np.unique(cluster(embeddings4, durations4, Hints(min_speakers=2, max_speakers=3)))) in (2, 3)
    # expected wins over min/max; limit caps everything
    assert len(np.unique(cluster(embeddings4, durations4, Hints(expected=4, max_speakers=2)))) == 4
    assert len(np.unique(cluster(embeddings4, durations4, Hints(expected=4), limit=2))) == 2
    assert len(np.unique(cluster(embeddings4, durations4, Hints(min_speakers=6), limit=3))) == 3
    # more speakers asked for than items: as many as there are items
    assert cluster(embeddings[:2], durations[:2], Hints(expected=5)).tolist() == [0, 1]


def test_short_inputs(voices):
    assert cluster(np.zeros((0, 256), np.float32), np.zeros(0)).shape == (0,)
    embeddings, durations, truth = pick(voices, ["2414", "3331"])
    assert cluster(embeddings[:1], durations[:1]).tolist() == [0]
    # two items of two voices are two speakers: no "too few items" rule
    assert cluster(embeddings[:2], durations[:2]).tolist() == [0, 1]
    same = np.flatnonzero(truth == "2414")[:2]
    assert cluster(embeddings[same], durations[same]).tolist() == [0, 0]
    # short units only (all under RELIABLE_S): still clustered, not lumped together
    assert cluster(embeddings[:4], np.full(4, 0.5)).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError):
        cluster(embeddings[:3], durations[:2])


def test_short_units_join_the_nearest_speaker(voices):
    embeddings, durations, truth = pick(voices, READERS[:3])
    durations = durations.copy()
    durations[::4] = 0.6  # a backchannel-length unit now and then
    labels = cluster(embeddings, durations)
    assert len(np.unique(labels)) == 3 and purity(labels, truth) >= 0.9


def test_staged_clustering_agrees_with_one_linkage(voices, monkeypatch):
    embeddings, durations, truth = pick(voices, READERS)
    whole = cluster(embeddings, durations)
    monkeypatch.setattr(dz, "BLOCK", 8)
    staged = cluster(embeddings, durations)
    assert len(np.unique(staged)) == 4 and purity(staged, truth) >= 0.9
    assert (staged == whole).mean() >= 0.9


def test_change_points(voices):
    found = change_points(voices["two"])
    assert len(found) == 1 and abs(found[0] - 8) <= 1, found  # the change at 6.0 s starts window 8
    assert change_points(voices["one"]) == []
    assert change_points(voices["two"][:2]) == []  # too few windows to tell
    assert change_points(np.zeros((0, 256), np.float32)) == []


def test_online_clusters(voices):
    embeddings, durations, truth = pick(voices, READERS[:3])
    online = OnlineClusters()
    labels = np.array([online.add(e, d) for e, d in zip(embeddings, durations)])
    assert labels[0] == 0
    assert list(dict.fromkeys(labels.tolist())) == list(range(len(set(labels.tolist()))))
    assert len(np.unique(labels)) == 3 and purity(labels, truth) >= 0.85
    final = online.final()
    assert len(np.unique(final)) == 3 and purity(final, truth) >= 0.9
    # the cap: max_speakers
    capped = OnlineClusters(Hints(max_speakers=2))
    assert max(capped.add(e, d) for e, d in zip(embeddings, durations)) == 1
    # a short unit never opens a speaker once one exists
    short = OnlineClusters()
    assert short.add(embeddings[0], 2.0) == 0 and short.add(embeddings[1], 0.5) == 0
    assert OnlineClusters().final().shape == (0,)


def test_constants_are_documented():
    source = Path(dz.__file__).read_text()
    for name in ("THRESHOLD", "RELIABLE_S", "MIN_CLUSTER_S", "PRE_THRESHOLD", "CHANGE_THRESHOLD", "ONLINE_THRESHOLD"):
        line = source.index(f"\n{name} = ")
        assert source[source.rindex("\n\n", 0, line):line].count("#"), f"{name} has no comment"
    json.dumps(dz.Hints().__dict__)  # plain data
