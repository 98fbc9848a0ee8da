"""toneserve's client: the Python SDK (sdk.py) and the `toneserve analyze` command (cli.py)."""
from toneserve.client.errors import AnalyzeError
from toneserve.client.results import (
                      CallSummary,
                      Distribution,
                      Judgement,
                      LabelSet,
                      Metadata,
                      ModelInfo,
                      Prosody,
                      Quarter,
                      Result,
                      Segment,
                      SpeakerSummary,
                      TextSentiment,
                      Thresholds,
                      TimelinePoint,
                      Word,
)
from toneserve.client.retry import RetryPolicy
from toneserve.client.sdk import AsyncClient, Client, live_wav_header

__all__ = ["Client", "AsyncClient", "AnalyzeError", "RetryPolicy", "Result", "Segment", "SpeakerSummary",
           "CallSummary", "Metadata", "Distribution", "Judgement", "Prosody", "TextSentiment", "Quarter",
           "TimelinePoint", "ModelInfo", "LabelSet", "Thresholds", "Word", "live_wav_header"]
