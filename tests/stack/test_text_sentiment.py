"""The words' sentiment through the real stack: the text-sentiment model served by Triton (tokenised inside
it), AnalyzeText through the SDK, the CLI and `toneserve eval sentiment`, every language of the audio path
scored by the same code, the served scores equal to the exported graph run locally, and the per-call
verdict of an LLM judge (a loopback stand-in) in a gateway's answers."""
from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from tokenizers import Tokenizer

from tests.llm_standin import LLMStandin, Reply
from tests.support import ROOT, gateway_process
from toneserve import contract
from toneserve.client import AnalyzeError, Client

SENTENCES = {
    "en": "Thank you for calling, how can I help you today? My order never arrived and nobody fixed it.",
    "zh": "您好，请问有什么可以帮您？今天就给您发快递，运费全免。",
    "yue": "唔該晒你哋幫手。我張單到而家都未處理。",
    "ja": "お電話ありがとうございます。荷物がまだ届いていません。",
    "ko": "전화 주셔서 감사합니다. 주문한 물건이 아직 안 왔어요.",
}


class Local:
    """The exported text model run here: tokenizer.json through `tokenizers`, model.onnx through ONNX Runtime."""

    def __init__(self, folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        self.serving = manifest["serving"]
        self.tokenizer = Tokenizer.from_file(str(folder / self.serving["tokenizer"]))
        self.tokenizer.enable_truncation(self.serving["max_tokens"])
        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])

    def probs(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text).ids
        return self.session.run(["probs"], {"input_ids": np.array([ids], np.int64),
                                            "input_lens": np.array([len(ids)], np.int64)})[0][0]

    def score(self, text: str) -> float:
        labels = [label.lower() for label in self.serving["labels"]]
        p = self.probs(text)
        return float(p[labels.index("positive")] - p[labels.index("negative")])


@pytest.fixture(scope="module")
def local(models_root) -> Local:
    return Local(models_root / "text_sentiment")


@pytest.mark.parametrize("language", contract.TEXT_LANGUAGES)
def test_analyze_text_scores_every_language_with_the_served_model(stack, local, language):
    with Client(stack.gateway) as client:
        result = client.analyze_text(SENTENCES[language], language=language)
    assert len(result.segments) == 2 and result.language == language
    assert result.segments[0].start_word == 0 and result.segments[0].end_word == result.segments[1].start_word
    model = next(m for m in result.metadata.models if m.name == contract.TEXT_SENTIMENT)
    assert model.family == "text_sentiment" and model.weights_origin == "random" and result.metadata.random_weights
    # Triton (tokeniser and graph in the ensemble) gives what the exported files give here.
    for segment in result.segments:
        assert segment.sentiment_score == pytest.approx(local.score(segment.text), abs=1e-5)
    words = [s.end_word - s.start_word for s in result.segments]
    mean = sum(w * s.sentiment_score for w, s in zip(words, result.segments)) / sum(words)
    assert result.average.sentiment_score == pytest.approx(mean, abs=1e-5)


def test_concurrent_texts_of_different_lengths_batch_exactly(stack, local):
    """Sentences sent to Triton at once (padded together by its batcher and the tokenizer's buckets) get
    the probabilities each gets alone from the exported graph."""
    texts = ["ok", "Thank you so much for your help today, really.", "我张单到而家都未处理", "네",
             " ".join(["very long"] * 100), "荷物がまだ届いていません。"]
    client = triton.InferenceServerClient(stack.triton_grpc)
    results: list = []
    for i, text in enumerate(texts):
        tensor = triton.InferInput(contract.TEXT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        client.async_infer(contract.TEXT_SENTIMENT, [tensor], lambda result, error: results.append((result, error)),
                          request_id=str(i))
    # And all of them in one request of six rows.
    tensor = triton.InferInput(contract.TEXT, [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    together = client.infer(contract.TEXT_SENTIMENT, [tensor]).as_numpy(contract.PROBS)
    for _ in range(600):
        if len(results) == len(texts):
            break
        time.sleep(0.05)
    assert len(results) == len(texts) and all(error is None for _, error in results)
    for result, _ in results:
        text = texts[int(result.get_response().id)]
        np.testing.assert_allclose(result.as_numpy(contract.PROBS)[0], local.probs(text), atol=1e-5)
    np.testing.assert_allclose(together, np.stack([local.probs(t) for t in texts]), atol=1e-5)


@pytest.mark.parametrize("language", contract.TEXT_LANGUAGES)
def test_the_audio_path_scores_every_language_as_analyze_text_does(stack, clip, language):
    with Client(stack.gateway) as client:
        result = client.analyze(clip, language=language)
        worded = [s for s in result.segments if s.text_sentiment.sentences]
        assert worded, "random weights gave no transcript with a word: nothing to compare"
        assert not [w for w in result.metadata.warnings if "text" in w and "sentiment" in w]
        for segment in worded:
            text = segment.text_sentiment
            assert text.scored and text.method.startswith("text_sentiment/") and text.method.endswith(" fp32")
            again = client.analyze_text(segment.transcript, language=language)
            assert [(s.text, s.start_word, s.end_word) for s in again.segments] == [
                (s.text, s.start_word, s.end_word) for s in text.sentences]
            for mine, theirs in zip(text.sentences, again.segments):
                assert mine.sentiment_score == pytest.approx(theirs.sentiment_score, abs=1e-6)
            assert text.score == pytest.approx(again.average.sentiment_score, abs=1e-6)


@pytest.mark.parametrize("text, language, words", [
    ("", "en", "empty"), ("x" * 16001, "en", "16000"), ("hello", "fr", "fr"), ("...", "en", "no word")])
def test_bad_texts_are_refused_by_the_gateway(stack, text, language, words):
    from toneserve.v1 import toneserve_pb2 as pb
    from toneserve.v1 import toneserve_pb2_grpc as pb_grpc

    with grpc.insecure_channel(stack.gateway) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.AnalyzerStub(channel).AnalyzeText(pb.AnalyzeTextRequest(text=text, language=language), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.value.details()
    assert dict(error.value.trailing_metadata())[contract.ERROR_CODE_METADATA] == "INVALID_ARGUMENT"


def test_the_sdk_checks_what_it_can_before_calling(stack):
    with Client(stack.gateway) as client:
        with pytest.raises(ValueError, match="empty"):
            client.analyze_text("  ")
        with pytest.raises(ValueError, match="language"):
            client.analyze_text("hi", language="fr")
        with pytest.raises(AnalyzeError) as error:
            client.analyze_text("x" * 20000)
    assert error.value.code == "INVALID_ARGUMENT"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toneserve", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def test_analyze_text_cli_reads_an_argument_a_file_and_stdin(stack, tmp_path):
    by_argument = run_cli("analyze-text", SENTENCES["en"], "--language", "en", "--address", stack.gateway)
    assert by_argument.returncode == 0, by_argument.stderr
    lines = by_argument.stdout.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("average: ") and "words 0-" in lines[0]
    path = tmp_path / "text.txt"
    path.write_text(SENTENCES["zh"], encoding="utf-8")
    by_file = run_cli("analyze-text", "--file", str(path), "--json", "--address", stack.gateway)
    assert by_file.returncode == 0, by_file.stderr
    answer = json.loads(by_file.stdout)
    assert [s["start_word"] for s in answer["segments"]] == [0, 11] and answer["language"] == "auto"
    by_stdin = run_cli("analyze-text", "-", "--json", "--address", stack.gateway, stdin=SENTENCES["ko"])
    assert by_stdin.returncode == 0 and len(json.loads(by_stdin.stdout)["segments"]) == 2
    empty = run_cli("analyze-text", "-", "--address", stack.gateway, stdin="   ")
    assert empty.returncode == 2 and "empty" in empty.stderr
    missing = run_cli("analyze-text", "--file", str(tmp_path / "nope.txt"), "--address", stack.gateway)
    assert missing.returncode == 2 and "nope.txt" in missing.stderr


def test_eval_sentiment_scores_the_call_centre_set(stack, tmp_path):
    out = run_cli("eval", "sentiment", str(ROOT / "tests" / "data" / "sentiment" / "callcentre.tsv"),
                  "--address", stack.gateway, "--json", str(tmp_path / "eval.json"))
    assert out.returncode == 0, out.stderr
    assert "MEANINGLESS" in out.stdout and "macro-F1" in out.stdout
    figures = json.loads((tmp_path / "eval.json").read_text())
    scores = figures["scores"]
    assert scores["overall"]["n"] == 235 and set(scores["languages"]) == set(contract.TEXT_LANGUAGES)
    assert figures["random_weights"] and len(figures["rows"]) == 235


# --- the LLM judge's verdict --------------------------------------------------------------------------

@contextlib.contextmanager
def standin(reply):
    """The OpenAI-compatible stand-in on a loop of its own, for a gateway process to call."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    llm = asyncio.run_coroutine_threadsafe(LLMStandin(reply).start(), loop).result(30)
    try:
        yield llm
    finally:
        asyncio.run_coroutine_threadsafe(llm.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def verdict_reply(body) -> Reply:
    """Cites the first and the last segment the prompt shows."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    ids = [int(line[1:line.index("]")]) for line in prompt.splitlines() if line.startswith("[")]
    return Reply(content=json.dumps({"sentiment": "negative", "score": -0.6, "reason": "The customer is upset.",
                                     "segment_ids": sorted({ids[0], ids[-1]})}))


def test_a_gateway_with_a_judge_answers_with_its_verdict_and_survives_its_failures(stack, clip, tmp_path):
    key = tmp_path / "judge.key"
    key.write_text("sk-test-key\n")
    with standin(verdict_reply) as llm:
        with gateway_process(
                stack.triton_grpc, tmp_path / "gateway.log", "--judge-url", llm.url, "--judge-model", "judge-1",
                "--judge-key-file", str(key), "--judge-timeout", "2") as gateway:
            with Client(gateway.address) as client:
                result = client.analyze(clip, channel_roles=["agent", "customer"])
                verdict = result.call.verdict
                assert verdict is not None and verdict.sentiment == "negative" and verdict.model == "judge-1"
                assert verdict.segment_ids == (0, len(result.segments) - 1)
                received = llm.requests[-1]
                assert received.json["model"] == "judge-1" and received.headers["Authorization"] == "Bearer sk-test-key"
                assert "customer" in received.content("user")
                # A judge slower than its timeout: the answer comes without a verdict, a warning says why.
                llm.reply = Reply(delay=30)
                started = time.monotonic()
                slow = client.analyze(clip)
                assert time.monotonic() - started < 25
                assert slow.call.verdict is None
                assert any("no call verdict" in w and "2 s" in w for w in slow.metadata.warnings), slow.metadata.warnings
                # A judge answering 500: the same.
                llm.reply = Reply(status=500)
                failed = client.analyze(clip)
                assert failed.call.verdict is None and any("HTTP 500" in w for w in failed.metadata.warnings)
    # The session's gateway has no judge: no verdict, and no warning about one.
    with Client(stack.gateway) as client:
        plain = client.analyze(clip)
    assert plain.call.verdict is None and not any("verdict" in w for w in plain.metadata.warnings)
