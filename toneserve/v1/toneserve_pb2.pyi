from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Flag(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLAG_UNSPECIFIED: _ClassVar[Flag]
    TONE_TEXT_MISMATCH: _ClassVar[Flag]
    ESCALATION: _ClassVar[Flag]
    ABSTAINED: _ClassVar[Flag]
FLAG_UNSPECIFIED: Flag
TONE_TEXT_MISMATCH: Flag
ESCALATION: Flag
ABSTAINED: Flag

class AnalyzeRequest(_message.Message):
    __slots__ = ("audio", "language", "window_seconds", "use_itn", "request_id", "channel_roles", "thresholds", "mix_channels", "diarization", "include_embeddings")
    class ChannelRolesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USE_ITN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ROLES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    MIX_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DIARIZATION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    language: str
    window_seconds: float
    use_itn: bool
    request_id: str
    channel_roles: _containers.ScalarMap[int, str]
    thresholds: Thresholds
    mix_channels: bool
    diarization: Diarization
    include_embeddings: bool
    def __init__(self, audio: _Optional[bytes] = ..., language: _Optional[str] = ..., window_seconds: _Optional[float] = ..., use_itn: _Optional[bool] = ..., request_id: _Optional[str] = ..., channel_roles: _Optional[_Mapping[int, str]] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., mix_channels: _Optional[bool] = ..., diarization: _Optional[_Union[Diarization, _Mapping]] = ..., include_embeddings: _Optional[bool] = ...) -> None: ...

class Diarization(_message.Message):
    __slots__ = ("mode", "speakers_expected", "min_speakers", "max_speakers")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        AUTO: _ClassVar[Diarization.Mode]
        ON: _ClassVar[Diarization.Mode]
        OFF: _ClassVar[Diarization.Mode]
    AUTO: Diarization.Mode
    ON: Diarization.Mode
    OFF: Diarization.Mode
    MODE_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    mode: Diarization.Mode
    speakers_expected: int
    min_speakers: int
    max_speakers: int
    def __init__(self, mode: _Optional[_Union[Diarization.Mode, str]] = ..., speakers_expected: _Optional[int] = ..., min_speakers: _Optional[int] = ..., max_speakers: _Optional[int] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("options", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: AnalyzeRequest
    chunk: bytes
    def __init__(self, options: _Optional[_Union[AnalyzeRequest, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Thresholds(_message.Message):
    __slots__ = ("vad_threshold", "min_silence_ms", "sentiment_break", "text_weight", "mismatch_gap", "min_confidence", "escalation_rise")
    VAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_SILENCE_MS_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_BREAK_FIELD_NUMBER: _ClassVar[int]
    TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_GAP_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_RISE_FIELD_NUMBER: _ClassVar[int]
    vad_threshold: float
    min_silence_ms: int
    sentiment_break: float
    text_weight: float
    mismatch_gap: float
    min_confidence: float
    escalation_rise: float
    def __init__(self, vad_threshold: _Optional[float] = ..., min_silence_ms: _Optional[int] = ..., sentiment_break: _Optional[float] = ..., text_weight: _Optional[float] = ..., mismatch_gap: _Optional[float] = ..., min_confidence: _Optional[float] = ..., escalation_rise: _Optional[float] = ...) -> None: ...

class Distribution(_message.Message):
    __slots__ = ("labels", "probabilities", "top")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    top: str
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., top: _Optional[str] = ...) -> None: ...

class Prosody(_message.Message):
    __slots__ = ("pitch_hz", "pitch_std_semitones", "loudness_dbfs", "speaking_rate_wpm", "voiced_fraction", "words")
    PITCH_HZ_FIELD_NUMBER: _ClassVar[int]
    PITCH_STD_SEMITONES_FIELD_NUMBER: _ClassVar[int]
    LOUDNESS_DBFS_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_RATE_WPM_FIELD_NUMBER: _ClassVar[int]
    VOICED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    pitch_hz: float
    pitch_std_semitones: float
    loudness_dbfs: float
    speaking_rate_wpm: float
    voiced_fraction: float
    words: int
    def __init__(self, pitch_hz: _Optional[float] = ..., pitch_std_semitones: _Optional[float] = ..., loudness_dbfs: _Optional[float] = ..., speaking_rate_wpm: _Optional[float] = ..., voiced_fraction: _Optional[float] = ..., words: _Optional[int] = ...) -> None: ...

class TextSentiment(_message.Message):
    __slots__ = ("scored", "score", "label", "method", "sentences")
    SCORED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    scored: bool
    score: float
    label: str
    method: str
    sentences: _containers.RepeatedCompositeFieldContainer[TextSegment]
    def __init__(self, scored: _Optional[bool] = ..., score: _Optional[float] = ..., label: _Optional[str] = ..., method: _Optional[str] = ..., sentences: _Optional[_Iterable[_Union[TextSegment, _Mapping]]] = ...) -> None: ...

class TextSegment(_message.Message):
    __slots__ = ("text", "start_word", "end_word", "sentiment", "sentiment_score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_WORD_FIELD_NUMBER: _ClassVar[int]
    END_WORD_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_word: int
    end_word: int
    sentiment: str
    sentiment_score: float
    def __init__(self, text: _Optional[str] = ..., start_word: _Optional[int] = ..., end_word: _Optional[int] = ..., sentiment: _Optional[str] = ..., sentiment_score: _Optional[float] = ...) -> None: ...

class SentimentAverage(_message.Message):
    __slots__ = ("sentiment", "sentiment_score")
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_SCORE_FIELD_NUMBER: _ClassVar[int]
    sentiment: str
    sentiment_score: float
    def __init__(self, sentiment: _Optional[str] = ..., sentiment_score: _Optional[float] = ...) -> None: ...

class AnalyzeTextRequest(_message.Message):
    __slots__ = ("text", "language", "request_id", "thresholds")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    request_id: str
    thresholds: Thresholds
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ..., request_id: _Optional[str] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ...) -> None: ...

class AnalyzeTextResponse(_message.Message):
    __slots__ = ("segments", "average", "metadata", "language")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[TextSegment]
    average: SentimentAverage
    metadata: Metadata
    language: str
    def __init__(self, segments: _Optional[_Iterable[_Union[TextSegment, _Mapping]]] = ..., average: _Optional[_Union[SentimentAverage, _Mapping]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., language: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("sentiment", "score", "reason", "segment_ids", "model")
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    sentiment: str
    score: float
    reason: str
    segment_ids: _containers.RepeatedScalarFieldContainer[int]
    model: str
    def __init__(self, sentiment: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ..., segment_ids: _Optional[_Iterable[int]] = ..., model: _Optional[str] = ...) -> None: ...

class Judgement(_message.Message):
    __slots__ = ("sentiment", "score", "tone_score", "arousal", "agreement", "flags")
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TONE_SCORE_FIELD_NUMBER: _ClassVar[int]
    AROUSAL_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    sentiment: str
    score: float
    tone_score: float
    arousal: float
    agreement: float
    flags: _containers.RepeatedScalarFieldContainer[Flag]
    def __init__(self, sentiment: _Optional[str] = ..., score: _Optional[float] = ..., tone_score: _Optional[float] = ..., arousal: _Optional[float] = ..., agreement: _Optional[float] = ..., flags: _Optional[_Iterable[_Union[Flag, str]]] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "start_ms", "end_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_ms: int
    end_ms: int
    def __init__(self, text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("start_ms", "end_ms", "channel", "transcript", "language", "asr_emotion", "event", "itn", "emotion", "speaker", "prosody", "text_sentiment", "judgement", "emotion_windows", "provisional_speaker", "words", "embedding")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ASR_EMOTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ITN_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    PROSODY_FIELD_NUMBER: _ClassVar[int]
    TEXT_SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    JUDGEMENT_FIELD_NUMBER: _ClassVar[int]
    EMOTION_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_SPEAKER_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
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
    provisional_speaker: str
    words: _containers.RepeatedCompositeFieldContainer[Word]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., channel: _Optional[int] = ..., transcript: _Optional[str] = ..., language: _Optional[_Union[Distribution, _Mapping]] = ..., asr_emotion: _Optional[_Union[Distribution, _Mapping]] = ..., event: _Optional[_Union[Distribution, _Mapping]] = ..., itn: _Optional[_Union[Distribution, _Mapping]] = ..., emotion: _Optional[_Union[Distribution, _Mapping]] = ..., speaker: _Optional[str] = ..., prosody: _Optional[_Union[Prosody, _Mapping]] = ..., text_sentiment: _Optional[_Union[TextSentiment, _Mapping]] = ..., judgement: _Optional[_Union[Judgement, _Mapping]] = ..., emotion_windows: _Optional[int] = ..., provisional_speaker: _Optional[str] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class Quarter(_message.Message):
    __slots__ = ("index", "has_speech", "sentiment", "talk_seconds")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HAS_SPEECH_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    TALK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    has_speech: bool
    sentiment: float
    talk_seconds: float
    def __init__(self, index: _Optional[int] = ..., has_speech: _Optional[bool] = ..., sentiment: _Optional[float] = ..., talk_seconds: _Optional[float] = ...) -> None: ...

class TimelinePoint(_message.Message):
    __slots__ = ("speaker", "start_ms", "end_ms", "emotion", "probability", "sentiment")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    speaker: str
    start_ms: int
    end_ms: int
    emotion: str
    probability: float
    sentiment: float
    def __init__(self, speaker: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., emotion: _Optional[str] = ..., probability: _Optional[float] = ..., sentiment: _Optional[float] = ...) -> None: ...

class SpeakerSummary(_message.Message):
    __slots__ = ("speaker", "channel", "segments", "talk_seconds", "non_talk_seconds", "average_sentiment", "quarters", "emotion_timeline", "emotion", "loudness_dbfs", "speaking_rate_wpm", "words", "overlap_seconds", "interruptions", "flagged_segments")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    TALK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NON_TALK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    QUARTERS_FIELD_NUMBER: _ClassVar[int]
    EMOTION_TIMELINE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    LOUDNESS_DBFS_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_RATE_WPM_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTIONS_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    speaker: str
    channel: int
    segments: int
    talk_seconds: float
    non_talk_seconds: float
    average_sentiment: float
    quarters: _containers.RepeatedCompositeFieldContainer[Quarter]
    emotion_timeline: _containers.RepeatedCompositeFieldContainer[TimelinePoint]
    emotion: Distribution
    loudness_dbfs: float
    speaking_rate_wpm: float
    words: int
    overlap_seconds: float
    interruptions: int
    flagged_segments: int
    def __init__(self, speaker: _Optional[str] = ..., channel: _Optional[int] = ..., segments: _Optional[int] = ..., talk_seconds: _Optional[float] = ..., non_talk_seconds: _Optional[float] = ..., average_sentiment: _Optional[float] = ..., quarters: _Optional[_Iterable[_Union[Quarter, _Mapping]]] = ..., emotion_timeline: _Optional[_Iterable[_Union[TimelinePoint, _Mapping]]] = ..., emotion: _Optional[_Union[Distribution, _Mapping]] = ..., loudness_dbfs: _Optional[float] = ..., speaking_rate_wpm: _Optional[float] = ..., words: _Optional[int] = ..., overlap_seconds: _Optional[float] = ..., interruptions: _Optional[int] = ..., flagged_segments: _Optional[int] = ...) -> None: ...

class CallSummary(_message.Message):
    __slots__ = ("duration_seconds", "talk_seconds", "non_talk_seconds", "overlap_seconds", "interruptions", "average_sentiment", "quarters", "emotion_timeline", "emotion", "loudness_dbfs", "speaking_rate_wpm", "segments", "flagged_segments", "verdict")
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TALK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NON_TALK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTIONS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    QUARTERS_FIELD_NUMBER: _ClassVar[int]
    EMOTION_TIMELINE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    LOUDNESS_DBFS_FIELD_NUMBER: _ClassVar[int]
    SPEAKING_RATE_WPM_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    duration_seconds: float
    talk_seconds: float
    non_talk_seconds: float
    overlap_seconds: float
    interruptions: int
    average_sentiment: float
    quarters: _containers.RepeatedCompositeFieldContainer[Quarter]
    emotion_timeline: _containers.RepeatedCompositeFieldContainer[TimelinePoint]
    emotion: Distribution
    loudness_dbfs: float
    speaking_rate_wpm: float
    segments: int
    flagged_segments: int
    verdict: Verdict
    def __init__(self, duration_seconds: _Optional[float] = ..., talk_seconds: _Optional[float] = ..., non_talk_seconds: _Optional[float] = ..., overlap_seconds: _Optional[float] = ..., interruptions: _Optional[int] = ..., average_sentiment: _Optional[float] = ..., quarters: _Optional[_Iterable[_Union[Quarter, _Mapping]]] = ..., emotion_timeline: _Optional[_Iterable[_Union[TimelinePoint, _Mapping]]] = ..., emotion: _Optional[_Union[Distribution, _Mapping]] = ..., loudness_dbfs: _Optional[float] = ..., speaking_rate_wpm: _Optional[float] = ..., segments: _Optional[int] = ..., flagged_segments: _Optional[int] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "family", "preset", "weights_origin", "precision", "runtime")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    family: str
    preset: str
    weights_origin: str
    precision: str
    runtime: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., family: _Optional[str] = ..., preset: _Optional[str] = ..., weights_origin: _Optional[str] = ..., precision: _Optional[str] = ..., runtime: _Optional[str] = ...) -> None: ...

class LabelSet(_message.Message):
    __slots__ = ("name", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("request_id", "models", "random_weights", "audio_seconds", "sample_rate_in", "channels_in", "processing_ms", "warnings", "emotion_labels", "label_sets", "thresholds", "container", "codec")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_IN_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_IN_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    EMOTION_LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SETS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    random_weights: bool
    audio_seconds: float
    sample_rate_in: int
    channels_in: int
    processing_ms: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    emotion_labels: _containers.RepeatedScalarFieldContainer[str]
    label_sets: _containers.RepeatedCompositeFieldContainer[LabelSet]
    thresholds: Thresholds
    container: str
    codec: str
    def __init__(self, request_id: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., random_weights: _Optional[bool] = ..., audio_seconds: _Optional[float] = ..., sample_rate_in: _Optional[int] = ..., channels_in: _Optional[int] = ..., processing_ms: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., emotion_labels: _Optional[_Iterable[str]] = ..., label_sets: _Optional[_Iterable[_Union[LabelSet, _Mapping]]] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., container: _Optional[str] = ..., codec: _Optional[str] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("segments", "metadata", "speakers", "call")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    metadata: Metadata
    speakers: _containers.RepeatedCompositeFieldContainer[SpeakerSummary]
    call: CallSummary
    def __init__(self, segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., speakers: _Optional[_Iterable[_Union[SpeakerSummary, _Mapping]]] = ..., call: _Optional[_Union[CallSummary, _Mapping]] = ...) -> None: ...

class AnalyzeEvent(_message.Message):
    __slots__ = ("segment", "result")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    segment: Segment
    result: AnalyzeResponse
    def __init__(self, segment: _Optional[_Union[Segment, _Mapping]] = ..., result: _Optional[_Union[AnalyzeResponse, _Mapping]] = ...) -> None: ...
