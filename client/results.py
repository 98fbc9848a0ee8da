"""Typed, immutable results: the toneserve.v1 AnalyzeResponse as plain Python values.

Field names are the proto's (so proto/toneserve/v1/toneserve.proto documents them), with
four changes that make them pleasant to use: repeated fields are tuples, `Judgement.flags`
are lower-case strings ("tone_text_mismatch", "escalation", "abstained"), unset optional
thresholds are None, and so is `Segment.embedding` when the request did not ask for it.
Float32 fields are rounded to the shortest decimal that is the same float32 (0.3, not
0.30000001192092896), as protobuf's own JSON printer does.
"""
from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from functools import cache

from google.protobuf.descriptor import FieldDescriptor

from toneserve.v1 import toneserve_pb2 as pb

# Flags that point a reviewer at a segment (as gateway/rollup.py counts them). "abstained" is not one:
# it says the voice model had no opinion, not that anything happened in the call.
REVIEW_FLAGS = ("tone_text_mismatch", "escalation")


@dataclass(frozen=True)
class Distribution:
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    top: str  # the label with the highest probability

    @property
    def probability(self) -> float:
        """The top label's probability (0 for an empty distribution)."""
        return max(self.probabilities, default=0.0)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities))


@dataclass(frozen=True)
class Prosody:
    pitch_hz: float
    pitch_std_semitones: float
    loudness_dbfs: float
    speaking_rate_wpm: float
    voiced_fraction: float
    words: int


@dataclass(frozen=True)
class TextSegment:
    """One sentence and its sentiment; words [start_word, end_word) of the whole text."""
    text: str
    start_word: int
    end_word: int
    sentiment: str
    sentiment_score: float


@dataclass(frozen=True)
class TextSentiment:
    scored: bool  # False when the text holds no word, or nothing scores its language
    score: float
    label: str
    method: str  # "<family>/<preset> <precision>" of the text model, or "vader" / "snownlp"
    sentences: tuple[TextSegment, ...] = ()


@dataclass(frozen=True)
class SentimentAverage:
    sentiment: str
    sentiment_score: float


@dataclass(frozen=True)
class Verdict:
    """The LLM judge's verdict on the call (the gateway's --judge-url)."""
    sentiment: str
    score: float
    reason: str
    segment_ids: tuple[int, ...]  # indexes into Result.segments
    model: str


@dataclass(frozen=True)
class Judgement:
    sentiment: str
    score: float
    tone_score: float
    arousal: float
    agreement: float
    flags: tuple[str, ...]  # "tone_text_mismatch", "escalation", "abstained"


class _Span:
    """`start` / `end` in seconds from the start of the recording, of a result's start_ms / end_ms."""
    start_ms: int
    end_ms: int

    @property
    def start(self) -> float:
        return self.start_ms / 1000

    @property
    def end(self) -> float:
        return self.end_ms / 1000


@dataclass(frozen=True)
class Word(_Span):
    """One word of a transcript (TextSegment.start_word / end_word count these) and when it was spoken."""
    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Segment(_Span):
    start_ms: int
    end_ms: int
    channel: int
    transcript: str
    language: Distribution
    asr_emotion: Distribution
    event: Distribution
    itn: Distribution
    emotion: Distribution
    speaker: str
    prosody: Prosody
    text_sentiment: TextSentiment
    judgement: Judgement
    emotion_windows: int
    # Diarized channels of a live stream: the speaker given when the segment was sent (see the proto).
    provisional_speaker: str = ""
    words: tuple[Word, ...] = ()  # the transcript's words with their times
    # emotion2vec+'s embedding of the segment (analyze(include_embeddings=True)); None when not asked for.
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Quarter:
    index: int
    has_speech: bool
    sentiment: float
    talk_seconds: float


@dataclass(frozen=True)
class TimelinePoint:
    speaker: str
    start_ms: int
    end_ms: int
    emotion: str
    probability: float
    sentiment: float


@dataclass(frozen=True)
class SpeakerSummary:
    speaker: str
    channel: int
    segments: int
    talk_seconds: float
    non_talk_seconds: float
    average_sentiment: float
    quarters: tuple[Quarter, ...]
    emotion_timeline: tuple[TimelinePoint, ...]
    emotion: Distribution
    loudness_dbfs: float
    speaking_rate_wpm: float
    words: int
    overlap_seconds: float
    interruptions: int
    flagged_segments: int


@dataclass(frozen=True)
class CallSummary:
    duration_seconds: float
    talk_seconds: float
    non_talk_seconds: float
    overlap_seconds: float
    interruptions: int
    average_sentiment: float
    quarters: tuple[Quarter, ...]
    emotion_timeline: tuple[TimelinePoint, ...]
    emotion: Distribution
    loudness_dbfs: float
    speaking_rate_wpm: float
    segments: int
    flagged_segments: int
    verdict: Verdict | None = None  # None: no judge configured, or it failed (a metadata warning says why)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    family: str
    preset: str
    weights_origin: str
    precision: str
    runtime: str = ""  # "onnxruntime" or "openvino"; empty from a server older than the field


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Thresholds:
    vad_threshold: float | None = None
    min_silence_ms: int | None = None
    sentiment_break: float | None = None
    text_weight: float | None = None
    mismatch_gap: float | None = None
    min_confidence: float | None = None
    escalation_rise: float | None = None


@dataclass(frozen=True)
class Metadata:
    request_id: str
    models: tuple[ModelInfo, ...]
    random_weights: bool  # the outputs are meaningless: untrained models answered
    audio_seconds: float
    sample_rate_in: int
    channels_in: int
    processing_ms: float
    warnings: tuple[str, ...]
    emotion_labels: tuple[str, ...]
    label_sets: tuple[LabelSet, ...]
    thresholds: Thresholds  # the ones the request ran with, defaults filled in
    container: str
    codec: str


@dataclass(frozen=True)
class Result:
    segments: tuple[Segment, ...]
    speakers: tuple[SpeakerSummary, ...]
    call: CallSummary
    metadata: Metadata
    raw: pb.AnalyzeResponse = field(repr=False, compare=False)  # the response as received

    def flagged(self) -> list[Segment]:
        """Segments a reviewer should look at (REVIEW_FLAGS), in time order: the ones the gateway counts
        in `flagged_segments`."""
        return [s for s in self.segments if any(f in REVIEW_FLAGS for f in s.judgement.flags)]

    def to_dict(self) -> dict:
        """Plain JSON-ready values (lists, dicts, str, numbers, None), without `raw`."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "raw"}

    @classmethod
    def from_proto(cls, response: pb.AnalyzeResponse) -> Result:
        return cls(segments=tuple(_convert(s, Segment) for s in response.segments),
                   speakers=tuple(_convert(s, SpeakerSummary) for s in response.speakers),
                   call=_convert(response.call, CallSummary), metadata=_convert(response.metadata, Metadata),
                   raw=response)


@dataclass(frozen=True)
class TextResult:
    """AnalyzeText's answer: the text's sentences scored, and their average (Deepgram's shape)."""
    segments: tuple[TextSegment, ...]
    average: SentimentAverage
    language: str
    metadata: Metadata
    raw: pb.AnalyzeTextResponse = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "raw"}

    @classmethod
    def from_proto(cls, response: pb.AnalyzeTextResponse) -> TextResult:
        return cls(segments=tuple(_convert(s, TextSegment) for s in response.segments),
                   average=_convert(response.average, SentimentAverage), language=response.language,
                   metadata=_convert(response.metadata, Metadata), raw=response)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# Each proto message type and the dataclass it becomes.
_TYPES = {cls.__name__: cls for cls in (Distribution, Prosody, TextSentiment, TextSegment, Judgement, Segment,
                                        Quarter, TimelinePoint, SpeakerSummary, CallSummary, ModelInfo, LabelSet,
                                        Thresholds, Metadata, SentimentAverage, Verdict, Word)}
# Message fields that read as None when the server left them unset (not as an empty message).
_ABSENT_IS_NONE = frozenset({"verdict"})
# Repeated fields that read as None when empty: the server sends them only when asked to.
_EMPTY_IS_NONE = frozenset({"embedding"})


@cache
def _field_names(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def from_event(event: pb.AnalyzeEvent) -> Segment | Result:
    """One AnalyzeStream message: a Segment as soon as it is analysed, the whole Result last."""
    if event.WhichOneof("event") == "segment":
        return _convert(event.segment, Segment)
    return Result.from_proto(event.result)


def _convert(message, cls):
    """A proto message as `cls`, field by field. Fields a newer server adds, and this client does not
    know yet, are left out (they are still in `Result.raw`)."""
    names = _field_names(cls)
    values = {}
    for descriptor in message.DESCRIPTOR.fields:
        if descriptor.name not in names:
            continue
        value = getattr(message, descriptor.name)
        if descriptor.is_repeated:
            values[descriptor.name] = tuple(_scalar(descriptor, v) for v in value)
            if not value and descriptor.name in _EMPTY_IS_NONE:
                values[descriptor.name] = None
        elif descriptor.has_presence and (descriptor.type != FieldDescriptor.TYPE_MESSAGE
                                          or descriptor.name in _ABSENT_IS_NONE) \
                and not message.HasField(descriptor.name):
            values[descriptor.name] = None
        else:
            values[descriptor.name] = _scalar(descriptor, value)
    return cls(**values)


def _scalar(descriptor, value):
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return _convert(value, _TYPES[descriptor.message_type.name])
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        known = descriptor.enum_type.values_by_number.get(value)  # a newer server's value: its number
        return known.name.lower() if known else str(value)
    if descriptor.type == FieldDescriptor.TYPE_FLOAT:
        return _shortest_float32(value)
    return value


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (protobuf's JSON printer does the same)."""
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", candidate))[0] == value:
            return candidate
    return value  # NaN

