from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeRequest(_message.Message):
    __slots__ = ("audio", "language", "window_seconds", "use_itn", "request_id")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USE_ITN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    language: str
    window_seconds: float
    use_itn: bool
    request_id: str
    def __init__(self, audio: _Optional[bytes] = ..., language: _Optional[str] = ..., window_seconds: _Optional[float] = ..., use_itn: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class Distribution(_message.Message):
    __slots__ = ("labels", "probabilities", "top")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    top: str
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., top: _Optional[str] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("start_ms", "end_ms", "channel", "transcript", "language", "asr_emotion", "event", "itn", "emotion")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ASR_EMOTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ITN_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    end_ms: int
    channel: int
    transcript: str
    language: Distribution
    asr_emotion: Distribution
    event: Distribution
    itn: Distribution
    emotion: Distribution
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., channel: _Optional[int] = ..., transcript: _Optional[str] = ..., language: _Optional[_Union[Distribution, _Mapping]] = ..., asr_emotion: _Optional[_Union[Distribution, _Mapping]] = ..., event: _Optional[_Union[Distribution, _Mapping]] = ..., itn: _Optional[_Union[Distribution, _Mapping]] = ..., emotion: _Optional[_Union[Distribution, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "family", "preset", "weights_origin", "precision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    family: str
    preset: str
    weights_origin: str
    precision: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., family: _Optional[str] = ..., preset: _Optional[str] = ..., weights_origin: _Optional[str] = ..., precision: _Optional[str] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("request_id", "models", "random_weights", "audio_seconds", "sample_rate_in", "channels_in", "processing_ms", "warnings", "emotion_labels")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_IN_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_IN_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    EMOTION_LABELS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    random_weights: bool
    audio_seconds: float
    sample_rate_in: int
    channels_in: int
    processing_ms: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    emotion_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., random_weights: _Optional[bool] = ..., audio_seconds: _Optional[float] = ..., sample_rate_in: _Optional[int] = ..., channels_in: _Optional[int] = ..., processing_ms: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., emotion_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("segments", "metadata")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    metadata: Metadata
    def __init__(self, segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ...) -> None: ...
