"""The playground page (`--playground` on `--http-port`) in a real browser: headless Chromium, driven by Selenium,
against a gateway of its own (API keys required) on the session's Triton.

The browser types the key, uploads a 20 s two-speaker call, watches the request run and reads the result off the
DOM: one segment per segment of a JSON request of the same file, a lane per speaker, talk time, the flagged
segments, the words of the hovered segment; clicking a segment plays that span of the uploaded audio. A full-page
screenshot is kept (the test's tmp folder, and $TONESERVE_TEST_ARTIFACTS when set). A file dropped on the page is
taken as the one to send, and a wrong key's error is shown with its code.

Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (scripts/setup installs them). Without
them the tests skip on a developer's machine and fail in CI (CI=true)."""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support import gateway_process

KEY = "k-playground-Vq3Lm8Rt1Xz6Nb4Wc7Hd2Jf5"
ROLES = "agent,customer"
# With a zero gap every segment whose voice gives a judgement and whose words are scored is TONE_TEXT_MISMATCH,
# and one whose voice does not is ABSTAINED: the call holds a flagged segment whatever the random weights say.
THRESHOLDS = {"mismatch_gap": "0", "min_confidence": "0", "escalation_rise": "0"}
BROWSER_NAMES = ("chromium", "chromium-browser")


def _missing(reason: str):
    """A missing browser fails the run in CI, where scripts/setup installs it, and skips elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: the playground must be tested there)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Chromium's binary and its driver. Session-scoped, and first in each test's arguments, so that it is looked
    for before the session's stack is started for nothing."""
    binary = next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("headless Chromium is not installed: apt-get install chromium chromium-driver (scripts/setup does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install -r requirements.txt)")
    return binary, driver_path


@pytest.fixture(scope="module")
def browser(chromium):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. No autoplay flag: a click is the
    # user gesture that lets the page play, as for a real user.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                     "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is named, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def playground(stack, tmp_path_factory):
    """A gateway of its own with the HTTP API, the playground and an API key; yields the page's URL."""
    from toneserve.triton import free_port

    folder = tmp_path_factory.mktemp("playground")
    keys = folder / "keys.txt"
    keys.write_text(f"{KEY} playground\n")
    port = free_port()
    with gateway_process(stack.triton_grpc, folder / "gateway.log", "--api-keys", str(keys),
                         "--http-port", str(port), "--playground") as gateway:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the HTTP port never answered:\n{gateway.log.read_text()}") from None
            time.sleep(0.2)
        yield url


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """The demo's recording: a 20 s call, agent and customer on a channel each."""
    from toneserve.samples import call, wav_bytes

    path = tmp_path_factory.mktemp("playground-audio") / "call-20s.wav"
    path.write_bytes(wav_bytes(call(20.0, rate=16000, seed=0).samples, 16000))
    return path


def _analyze_json(url: str, audio: bytes, **params: str) -> dict:
    request = urllib.request.Request(f"{url}/v1/analyze?{urlencode(params)}", data=audio, method="POST",
                                     headers={"Content-Type": "application/octet-stream",
                                              "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _wait(driver, condition, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except Exception as error:
        logs = "\n".join(str(entry) for entry in driver.get_log("browser"))
        raise AssertionError(f"{what}: not within {timeout} s ({type(error).__name__}); browser console:\n{logs}")


def _open(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/")
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", 15,
          "the page's script started")


def _submit(driver, recording: Path, key: str, thresholds: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.ID, "file").send_keys(str(recording))
    assert driver.find_element(By.ID, "file-name").text.startswith(recording.name)
    assert driver.find_element(By.ID, "roles").get_attribute("value") == ROLES
    if thresholds:
        driver.find_element(By.CSS_SELECTOR, "#advanced summary").click()
        for name, value in thresholds.items():
            driver.find_element(By.ID, f"t-{name}").send_keys(value)
    driver.find_element(By.ID, "analyze").click()


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The whole page (the window grown to its height), under tmp_path and $TONESERVE_TEST_ARTIFACTS."""
    height = driver.execute_script("window.scrollTo(0, 0); return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 40, 8000))
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), "no screenshot was written"
    artifacts = os.environ.get("TONESERVE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    driver.set_window_size(1280, 1000)
    return path


def test_upload_timeline_words_and_playback(chromium, browser, playground, recording, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    expected = _analyze_json(playground, recording.read_bytes(), language="auto", roles=ROLES, itn="true",
                             **THRESHOLDS)
    assert {s["speaker"] for s in expected["speakers"]} == {"agent", "customer"}, expected["speakers"]

    _open(browser, playground)
    assert browser.find_element(By.ID, "health").get_attribute("data-state") in ("unknown", "serving")
    _wait(browser, lambda d: d.find_element(By.ID, "health").get_attribute("data-state") == "serving", 10,
          "the page read /v1/health")
    _submit(browser, recording, KEY, THRESHOLDS)
    # The request runs: its progress is shown, then it ends.
    _wait(browser, lambda d: not d.find_element(By.ID, "progress").get_attribute("hidden"), 5, "the progress shown")
    _wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "failed"), 120,
          "the analysis ended")
    status = browser.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "done", (status.text, browser.find_element(By.ID, "error").text)
    assert float(browser.find_element(By.ID, "upload-progress").get_attribute("value")) == 1.0
    assert browser.find_element(By.ID, "upload-percent").text == "100 %"
    assert float(browser.find_element(By.ID, "elapsed").text.removesuffix(" s")) > 0
    assert not browser.find_element(By.ID, "result").get_attribute("hidden")

    # What the page received, as it shows it; the request it sent carried the options and thresholds typed.
    shown = json.loads(browser.execute_script("return document.getElementById('raw-json').textContent"))
    for name, value in THRESHOLDS.items():
        assert shown["metadata"]["thresholds"][name] == float(value), shown["metadata"]["thresholds"]
    segments = shown["segments"]

    # One button per segment, as many as the JSON request of the same file found, in the same places.
    buttons = browser.find_elements(By.CSS_SELECTOR, "#timeline .segment")
    assert len(buttons) == len(segments) == len(expected["segments"]) > 0
    drawn = sorted((b.get_attribute("data-speaker"), int(b.get_attribute("data-start-ms")),
                    int(b.get_attribute("data-end-ms"))) for b in buttons)
    assert drawn == sorted((s["speaker"], s["start_ms"], s["end_ms"]) for s in expected["segments"])
    for button in buttons:
        segment = segments[int(button.get_attribute("data-index"))]
        assert button.get_attribute("data-sentiment") == segment["judgement"]["sentiment"]
        assert button.get_attribute("data-emotion") == (segment["emotion"]["top"] or "—")
        assert button.find_element(By.CSS_SELECTOR, ".segment-label").get_attribute("textContent") == \
            button.get_attribute("data-emotion")
        assert f"sentiment-{segment['judgement']['sentiment']}" in button.get_attribute("class").split()
        assert button.get_attribute("data-flags").split() == segment["judgement"]["flags"]

    # A lane per speaker, each holding that speaker's segments; talk time per speaker.
    lanes = browser.find_elements(By.CSS_SELECTOR, "#timeline .lane[data-speaker]")
    assert [lane.get_attribute("data-speaker") for lane in lanes] == [s["speaker"] for s in shown["speakers"]]
    for lane in lanes:
        inside = lane.find_elements(By.CSS_SELECTOR, ".segment")
        assert inside and {b.get_attribute("data-speaker") for b in inside} == {lane.get_attribute("data-speaker")}
    for summary in shown["speakers"]:
        row = browser.find_element(By.CSS_SELECTOR, f"#talk-time tr[data-speaker='{summary['speaker']}']")
        cell = row.find_element(By.CSS_SELECTOR, ".talk-seconds")
        assert float(cell.get_attribute("data-seconds")) == pytest.approx(summary["talk_seconds"])
        assert summary["talk_seconds"] > 0

    # Tiny models run random weights: the metadata says so, and so does the page, visibly.
    assert shown["metadata"]["random_weights"] is True
    assert browser.find_element(By.ID, "random-weights").is_displayed()
    warnings = [w.text for w in browser.find_elements(By.CSS_SELECTOR, "#warnings .warning")]
    assert warnings == shown["metadata"]["warnings"] and any("RANDOM WEIGHTS" in w for w in warnings)

    # The flagged segments: every segment with a flag, none without.
    flagged = {i for i, s in enumerate(segments) if s["judgement"]["flags"]}
    assert flagged, "the thresholds were to flag every segment"
    items = browser.find_elements(By.CSS_SELECTOR, "#flagged .flagged-segment")
    assert {int(item.get_attribute("data-index")) for item in items} == flagged
    for item in items:
        assert item.get_attribute("data-flags").split() == segments[int(item.get_attribute("data-index"))][
            "judgement"]["flags"]

    # The segment under the cursor shows its words (with their times), or its transcript when it has none.
    with_words = [b for b in buttons if segments[int(b.get_attribute("data-index"))]["words"]]
    hovered = (with_words or buttons)[0]
    ActionChains(browser).move_to_element(hovered).perform()
    index = int(hovered.get_attribute("data-index"))
    _wait(browser, lambda d: d.find_element(By.ID, "words").get_attribute("data-index") == str(index), 5,
          "the hovered segment's words shown")
    segment = segments[index]
    if segment["words"]:
        words = browser.find_elements(By.CSS_SELECTOR, "#words .word")
        assert [w.find_element(By.CSS_SELECTOR, ".word-text").text for w in words] == [
            w["text"] for w in segment["words"]]
        assert [(int(w.get_attribute("data-start-ms")), int(w.get_attribute("data-end-ms"))) for w in words] == [
            (w["start_ms"], w["end_ms"]) for w in segment["words"]]
    else:
        transcript = browser.find_element(By.CSS_SELECTOR, "#words .transcript")
        if segment["transcript"]:
            assert transcript.get_attribute("data-source") == "transcript"
            assert transcript.find_element(By.TAG_NAME, "q").text == segment["transcript"].strip()
        else:
            assert transcript.get_attribute("data-source") == "none"
    # Keyboard focus shows another segment the same way.
    other = buttons[1] if buttons[0] == hovered else buttons[0]
    browser.execute_script("arguments[0].focus()", other)
    assert browser.find_element(By.ID, "words").get_attribute("data-index") == other.get_attribute("data-index")

    # Clicking a segment plays its span of the uploaded file, and stops at its end.
    longest = max(buttons, key=lambda b: int(b.get_attribute("data-end-ms")) - int(b.get_attribute("data-start-ms")))
    start = int(longest.get_attribute("data-start-ms")) / 1000
    end = int(longest.get_attribute("data-end-ms")) / 1000
    src = browser.execute_script("return document.getElementById('player').currentSrc")
    assert src.startswith("blob:"), src
    longest.click()

    def current(driver):
        return driver.execute_script("const p = document.getElementById('player'); return [p.currentTime, p.paused]")

    _wait(browser, lambda d: (lambda t, paused: start + 0.2 <= t <= end and not paused)(*current(d)), 15,
          f"the player inside {start:.2f}-{end:.2f} s, playing")
    assert "playing" in longest.get_attribute("class").split()
    path = _screenshot(browser, tmp_path, "playground.png")
    _wait(browser, lambda d: current(d)[1], end - start + 10, "the player paused at the segment's end")
    position, _ = current(browser)
    assert end <= position <= end + 0.5, (position, end)
    assert path.stat().st_size > 10_000

    # Nothing of the page came from elsewhere, and the key was stored nowhere.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(playground + "/") or r.startswith(("blob:", "data:")) for r in resources), \
        resources
    assert browser.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


# A recording dropped on the page: one second of silence as a 16 kHz mono WAV, built in the page.
DROP = """
const rate = 16000, n = rate, view = new DataView(new ArrayBuffer(44 + 2 * n));
const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt "); view.setUint32(16, 16, true);
view.setUint16(20, 1, true); view.setUint16(22, 1, true); view.setUint32(24, rate, true);
view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
text(36, "data"); view.setUint32(40, 2 * n, true);
const transfer = new DataTransfer();
transfer.items.add(new File([view.buffer], "dropped.wav", {type: "audio/wav"}));
const zone = document.getElementById("drop-zone");
for (const type of ["dragenter", "dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
}
"""


def test_a_dropped_file_and_a_wrong_key_show_the_error_code_and_message(chromium, browser, playground):
    from selenium.webdriver.common.by import By

    _open(browser, playground)
    assert not browser.find_element(By.ID, "analyze").is_enabled()
    browser.execute_script(DROP)
    assert browser.find_element(By.ID, "file-name").text.startswith("dropped.wav")
    assert browser.find_element(By.ID, "drop-zone").get_attribute("data-state") == "chosen"
    browser.find_element(By.ID, "api-key").send_keys("k-not-a-key-of-this-gateway-000")
    browser.find_element(By.ID, "analyze").click()
    _wait(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "failed"), 60,
          "the request ended")
    assert browser.find_element(By.ID, "status").get_attribute("data-state") == "failed"
    assert browser.find_element(By.ID, "error").is_displayed()
    assert browser.find_element(By.ID, "error-status").text == "401"
    assert browser.find_element(By.ID, "error-code").text == "UNAUTHENTICATED"
    assert browser.find_element(By.ID, "error-message").text
    assert browser.find_element(By.ID, "error-request-id").text not in ("", "—")
    assert browser.find_element(By.ID, "result").get_attribute("hidden")
