// The toneserve playground: uploads a recording to POST /v1/analyze on the gateway that served this page and
// draws the AnalyzeResponse (protobuf JSON, snake_case field names). Plain JS, nothing loaded from elsewhere.
// The API key lives only in its input and in the one request's Authorization header: nothing is stored.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const THRESHOLDS = ["vad_threshold", "min_silence_ms", "sentiment_break", "text_weight", "mismatch_gap",
    "min_confidence", "escalation_rise"];
  // Flags a reviewer should look at: the ones the server counts in flagged_segments. ABSTAINED (the voice gave
  // no judgement) is a flag too: listed, and hidden from the list by a checkbox.
  const REVIEW_FLAGS = ["TONE_TEXT_MISMATCH", "ESCALATION"];
  const FLAG_NAMES = ["FLAG_UNSPECIFIED", "TONE_TEXT_MISMATCH", "ESCALATION", "ABSTAINED"];
  const FLAG_TEXT = {TONE_TEXT_MISMATCH: "tone/text mismatch", ESCALATION: "escalation", ABSTAINED: "abstained"};

  const state = {
    file: null,
    audioUrl: null,
    xhr: null,
    timer: null,
    started: 0,
    segments: [],
    stopAt: null,
    playing: null,  // index of the segment being played
    watch: null,
  };

  // ------------------------------------------------------------------ small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name === "style") Object.assign(node.style, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const num = (value, fallback = 0) => (typeof value === "number" && Number.isFinite(value) ? value
    : typeof value === "string" && value !== "" && Number.isFinite(Number(value)) ? Number(value) : fallback);

  function seconds(ms) {
    return (num(ms) / 1000).toFixed(2) + " s";
  }

  function clock(totalSeconds) {
    const s = Math.max(0, totalSeconds);
    const m = Math.floor(s / 60);
    const rest = s - 60 * m;
    return m ? `${m}:${rest.toFixed(1).padStart(4, "0")}` : `${rest.toFixed(1)} s`;
  }

  function signed(score) {
    const v = num(score);
    return (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(2);
  }

  function flagsOf(segment) {
    const flags = (segment.judgement && segment.judgement.flags) || [];
    return flags.map((f) => (typeof f === "number" ? FLAG_NAMES[f] || String(f) : String(f)));
  }

  function sentimentOf(segment) {
    const s = segment.judgement && segment.judgement.sentiment;
    return ["positive", "neutral", "negative"].includes(s) ? s : "neutral";
  }

  function emotionOf(segment) {
    return (segment.emotion && segment.emotion.top) || "—";
  }

  function emotionProbability(segment) {
    const e = segment.emotion || {};
    const i = (e.labels || []).indexOf(e.top);
    return i >= 0 && e.probabilities ? num(e.probabilities[i]) : null;
  }

  function reviewFlags(segment) {
    return flagsOf(segment).filter((f) => REVIEW_FLAGS.includes(f));
  }

  // ------------------------------------------------------------------ server health

  function checkHealth() {
    const node = $("health");
    fetch("/v1/health", {cache: "no-store"}).then(async (response) => {
      let status = "";
      try {
        status = (await response.json()).status || "";
      } catch (_) { /* not JSON */ }
      node.dataset.state = response.ok ? "serving" : "unavailable";
      node.textContent = response.ok ? `server: ${status || "SERVING"}` : `server: not ready (HTTP ${response.status})`;
    }).catch(() => {
      node.dataset.state = "unreachable";
      node.textContent = "server: unreachable";
    });
  }

  // ------------------------------------------------------------------ the recording

  function chooseFile(file) {
    if (!file) return;
    state.file = file;
    if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
    state.audioUrl = URL.createObjectURL(file);
    const player = $("player");
    stopPlayback();
    player.src = state.audioUrl;
    player.load();
    $("file-name").textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KiB)`;
    $("drop-zone").dataset.state = "chosen";
    $("analyze").disabled = false;
  }

  function setUpDropZone() {
    const zone = $("drop-zone");
    const input = $("file");
    input.addEventListener("change", () => chooseFile(input.files && input.files[0]));
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const name of ["dragleave", "dragend"]) zone.addEventListener(name, () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
      chooseFile(file);
    });
    // A file dropped beside the zone would make the browser leave the page for it.
    for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());
  }

  // ------------------------------------------------------------------ the request

  function query() {
    const params = new URLSearchParams();
    params.set("language", $("language").value);
    const roles = $("roles").value.split(",").map((r) => r.trim()).filter(Boolean);
    if (roles.length) params.set("roles", roles.join(","));
    params.set("itn", $("itn").checked ? "true" : "false");
    params.set("diarization", $("diarization").value);
    const speakers = $("speakers").value.trim();
    if (speakers) params.set("speakers", speakers);
    for (const name of THRESHOLDS) {
      const value = $(`t-${name}`).value.trim();
      if (value !== "") params.set(name, value);
    }
    return params;
  }

  function setStatus(stateName, text) {
    const node = $("status");
    node.dataset.state = stateName;
    node.textContent = text;
    document.body.dataset.state = stateName;
  }

  function tick() {
    $("elapsed").textContent = ((performance.now() - state.started) / 1000).toFixed(1) + " s";
  }

  function finish() {
    clearInterval(state.timer);
    state.timer = null;
    tick();
    state.xhr = null;
    $("analyze").disabled = !state.file;
    $("cancel").hidden = true;
  }

  function submit(event) {
    event.preventDefault();
    if (!state.file || state.xhr) return;
    const key = $("api-key").value.trim();
    const xhr = new XMLHttpRequest();
    state.xhr = xhr;
    xhr.open("POST", "/v1/analyze?" + query().toString());
    const type = state.file.type && state.file.type.startsWith("audio/") ? state.file.type : "application/octet-stream";
    xhr.setRequestHeader("Content-Type", type);
    xhr.setRequestHeader("Accept", "application/json");
    if (key) {
      try {
        xhr.setRequestHeader("Authorization", "Bearer " + key);
      } catch (_) {
        state.xhr = null;
        showError(0, "INVALID_KEY", "The API key holds characters an HTTP header cannot carry.", "");
        return;
      }
    }
    xhr.responseType = "text";

    $("error").hidden = true;
    $("result").hidden = true;
    $("progress").hidden = false;
    $("upload-progress").value = 0;
    $("upload-percent").textContent = "0 %";
    $("analyze").disabled = true;
    $("cancel").hidden = false;
    state.started = performance.now();
    state.timer = setInterval(tick, 100);
    tick();
    setStatus("uploading", `Uploading ${state.file.name}…`);

    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const fraction = e.total ? e.loaded / e.total : 0;
      $("upload-progress").value = fraction;
      $("upload-percent").textContent = `${Math.round(100 * fraction)} %`;
    });
    xhr.upload.addEventListener("load", () => {
      $("upload-progress").value = 1;
      $("upload-percent").textContent = "100 %";
      setStatus("analysing", "Uploaded; the server is analysing…");
    });
    xhr.addEventListener("load", () => {
      finish();
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) { /* not JSON */ }
      if (xhr.status === 200 && body) {
        setStatus("done", `Done in ${$("elapsed").textContent}.`);
        render(body);
      } else if (body && body.code) {
        showError(xhr.status, body.code, body.message || "", body.request_id || "");
      } else {
        const text = (xhr.responseText || "").slice(0, 300);
        showError(xhr.status, "HTTP_" + xhr.status, text || xhr.statusText || "no body", "");
      }
    });
    xhr.addEventListener("error", () => {
      finish();
      showError(0, "NETWORK_ERROR", "The gateway could not be reached, or it closed the connection.", "");
    });
    xhr.addEventListener("abort", () => {
      finish();
      setStatus("cancelled", "Cancelled.");
    });
    xhr.send(state.file);
  }

  function showError(status, code, message, requestId) {
    setStatus("failed", `Failed: ${code}`);
    $("error-status").textContent = status ? String(status) : "—";
    $("error-code").textContent = code;
    $("error-message").textContent = message;
    $("error-request-id").textContent = requestId || "—";
    $("error").hidden = false;
  }

  // ------------------------------------------------------------------ the result

  function speakerOrder(response, segments) {
    const names = (response.speakers || []).map((s) => s.speaker);
    for (const s of segments) if (!names.includes(s.speaker)) names.push(s.speaker);
    return names;
  }

  function tickStep(durationS) {
    for (const step of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800]) if (durationS / step <= 10) return step;
    return 3600;
  }

  function render(response) {
    stopPlayback();
    const metadata = response.metadata || {};
    const segments = (response.segments || []).map((s, index) => ({...s, index}));
    state.segments = segments;
    const lastEnd = segments.reduce((m, s) => Math.max(m, num(s.end_ms)), 0);
    const durationMs = Math.max(num(metadata.audio_seconds) * 1000, num((response.call || {}).duration_seconds) * 1000,
      lastEnd, 1);

    $("random-weights").hidden = !metadata.random_weights;
    const warnings = $("warnings");
    warnings.replaceChildren(...(metadata.warnings || []).map((w) => el("li", {class: "warning", text: w})));

    renderSummary(response, segments);
    renderTimeline(response, segments, durationMs);
    renderTalkTime(response);
    renderFlagged(segments);
    showSegment(null);
    $("now-playing").textContent = "";
    $("raw-json").textContent = JSON.stringify(response, null, 2);
    $("result").hidden = false;
    $("result").dataset.segments = String(segments.length);
    $("result").scrollIntoView({block: "start"});
  }

  function renderSummary(response, segments) {
    const metadata = response.metadata || {};
    const call = response.call || {};
    const models = (metadata.models || []).map((m) => `${m.name} (${m.family || "?"}, ${m.precision || "?"}` +
      `${m.weights_origin ? ", " + m.weights_origin : ""})`).join("; ");
    const rows = [
      ["Duration", clock(num(metadata.audio_seconds))],
      ["Input", [metadata.container, metadata.codec].filter(Boolean).join(" / ") +
        ` · ${num(metadata.sample_rate_in)} Hz · ${num(metadata.channels_in)} ch`],
      ["Segments", String(segments.length)],
      ["Speakers", String((response.speakers || []).length)],
      ["Call sentiment", signed(call.average_sentiment)],
      ["For review", String(num(call.flagged_segments))],
      ["Server time", `${num(metadata.processing_ms).toFixed(0)} ms`],
      ["Request id", metadata.request_id || "—"],
      ["Models", models || "—"],
    ];
    if (call.verdict && call.verdict.sentiment) {
      rows.push(["Verdict", `${call.verdict.sentiment} (${signed(call.verdict.score)}): ${call.verdict.reason || ""}`]);
    }
    $("summary").replaceChildren(...rows.flatMap(([term, value]) => [el("dt", {text: term}),
      el("dd", {text: value, "data-field": term.toLowerCase().replace(/\s+/g, "-")})]));
  }

  function renderTimeline(response, segments, durationMs) {
    const timeline = $("timeline");
    const durationS = durationMs / 1000;
    const step = tickStep(durationS);
    const axis = el("div", {class: "axis", "aria-hidden": "true"});
    for (let t = 0; t <= durationS + 1e-9; t += step) {
      axis.append(el("span", {class: "tick", style: {left: `${(100 * t) / durationS}%`}, text: clock(t)}));
    }
    const lanes = speakerOrder(response, segments).map((speaker, laneIndex) => {
      const track = el("div", {class: "track"});
      const mine = segments.filter((s) => s.speaker === speaker);
      for (const segment of mine) track.append(segmentButton(segment, durationMs));
      return el("div", {class: `lane lane-${laneIndex % 6}`, "data-speaker": speaker, role: "group",
        "aria-label": `${speaker}: ${mine.length} segments`},
      el("div", {class: "lane-label", text: speaker, title: speaker}), track);
    });
    timeline.replaceChildren(el("div", {class: "lane axis-lane"}, el("div", {class: "lane-label"}), axis), ...lanes);
  }

  function segmentButton(segment, durationMs) {
    const start = num(segment.start_ms);
    const end = Math.max(num(segment.end_ms), start);
    const flags = flagsOf(segment);
    const review = reviewFlags(segment);
    const sentiment = sentimentOf(segment);
    const emotion = emotionOf(segment);
    const label = `${segment.speaker}, ${seconds(start)} to ${seconds(end)}, ${sentiment}, ${emotion}` +
      (flags.length ? `, ${flags.map((f) => FLAG_TEXT[f] || f).join(", ")}` : "") + ". Press Enter to play.";
    return el("button", {
      type: "button",
      class: `segment sentiment-${sentiment}${flags.length ? " flagged" : ""}${review.length ? " review" : ""}`,
      id: `segment-${segment.index}`,
      "data-index": segment.index,
      "data-speaker": segment.speaker,
      "data-start-ms": start,
      "data-end-ms": end,
      "data-sentiment": sentiment,
      "data-emotion": emotion,
      "data-flags": flags.join(" "),
      "aria-label": label,
      title: `${seconds(start)}–${seconds(end)} · ${sentiment} ${signed(segment.judgement && segment.judgement.score)}` +
        ` · ${emotion}`,
      style: {left: `${(100 * start) / durationMs}%`, width: `${(100 * (end - start)) / durationMs}%`},
      onmouseenter: () => showSegment(segment),
      onfocus: () => showSegment(segment),
      onclick: () => playSegment(segment),
      onkeydown: (event) => moveFocus(event),
    }, el("span", {class: "segment-label", text: emotion}));
  }

  function moveFocus(event) {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const next = event.key === "ArrowRight" ? event.target.nextElementSibling : event.target.previousElementSibling;
    if (next && next.classList.contains("segment")) {
      event.preventDefault();
      next.focus();
    }
  }

  function renderTalkTime(response) {
    const speakers = response.speakers || [];
    const total = speakers.reduce((sum, s) => sum + num(s.talk_seconds), 0);
    const rows = speakers.map((s) => {
      const share = total ? num(s.talk_seconds) / total : 0;
      return el("tr", {"data-speaker": s.speaker},
        el("th", {scope: "row", text: s.speaker}),
        el("td", {class: "talk-seconds mono", "data-seconds": num(s.talk_seconds), text: clock(num(s.talk_seconds))}),
        el("td", {class: "share"},
          el("span", {class: "share-track"},
            el("span", {class: "share-bar", style: {width: `${(100 * share).toFixed(1)}%`}})),
          el("span", {class: "mono", text: `${(100 * share).toFixed(0)} %`})),
        el("td", {class: "mono", text: String(num(s.segments))}),
        el("td", {class: "mono", text: signed(s.average_sentiment)}),
        el("td", {class: "mono", text: String(num(s.flagged_segments))}));
    });
    $("talk-time").tBodies[0].replaceChildren(...rows);
  }

  function renderFlagged(segments) {
    const flagged = segments.filter((s) => flagsOf(s).length);
    const review = flagged.filter((s) => reviewFlags(s).length).length;
    $("flagged-count").textContent = `(${flagged.length}; ${review} for review)`;
    const list = $("flagged");
    if (!flagged.length) {
      list.replaceChildren(el("li", {class: "muted none", text: "No segment is flagged."}));
      return;
    }
    list.replaceChildren(...flagged.map((s) => el("li", {
      class: `flagged-segment${reviewFlags(s).length ? " review" : " abstained-only"}`,
      "data-index": s.index, "data-flags": flagsOf(s).join(" ")},
    el("button", {type: "button", class: "link", onclick: () => {
      playSegment(s);
      showSegment(s);
    }, "aria-label": `play ${s.speaker} ${seconds(s.start_ms)} to ${seconds(s.end_ms)}`},
    `${s.speaker} · ${seconds(s.start_ms)}–${seconds(s.end_ms)}`),
    ...flagsOf(s).map((f) => el("span", {class: `flag flag-${f.toLowerCase()}`, text: FLAG_TEXT[f] || f})),
    el("span", {class: "flag-detail muted", text: `${sentimentOf(s)} ${signed(s.judgement && s.judgement.score)}` +
      ` · tone ${signed(s.judgement && s.judgement.tone_score)} · words ` +
      (s.text_sentiment && s.text_sentiment.scored ? signed(s.text_sentiment.score) : "unscored")}),
    s.transcript ? el("q", {class: "excerpt", text: s.transcript}) : null)));
  }

  function showSegment(segment) {
    const panel = $("words");
    for (const node of document.querySelectorAll(".segment.shown")) node.classList.remove("shown");
    if (!segment) {
      panel.dataset.index = "";
      panel.replaceChildren(el("p", {class: "muted", text: "Hover or focus a segment."}));
      return;
    }
    const button = $(`segment-${segment.index}`);
    if (button) button.classList.add("shown");
    panel.dataset.index = String(segment.index);
    const j = segment.judgement || {};
    const probability = emotionProbability(segment);
    const flags = flagsOf(segment);
    const head = el("p", {class: "segment-head"},
      el("strong", {text: segment.speaker}), ` · ${seconds(segment.start_ms)}–${seconds(segment.end_ms)} · `,
      el("span", {class: `pill sentiment-${sentimentOf(segment)}`, text: `${sentimentOf(segment)} ${signed(j.score)}`}),
      ` · ${emotionOf(segment)}${probability === null ? "" : ` ${(100 * probability).toFixed(0)} %`}`,
      ...flags.map((f) => el("span", {class: `flag flag-${f.toLowerCase()}`, text: FLAG_TEXT[f] || f})));
    const words = segment.words || [];
    let body;
    if (words.length) {
      body = el("p", {class: "word-list", "data-source": "words"}, ...words.map((w, i) => el("span", {
        class: "word", "data-word": i, "data-start-ms": num(w.start_ms), "data-end-ms": num(w.end_ms),
        title: `${seconds(w.start_ms)}–${seconds(w.end_ms)}`,
      }, el("span", {class: "word-text", text: w.text}),
      el("span", {class: "word-time", text: (num(w.start_ms) / 1000).toFixed(2)}))));
    } else if (segment.transcript) {
      body = el("p", {class: "transcript", "data-source": "transcript"},
        el("span", {class: "muted", text: "No word times; the transcript: "}), el("q", {text: segment.transcript}));
    } else {
      body = el("p", {class: "transcript muted", "data-source": "none", text: "No words were recognised."});
    }
    panel.replaceChildren(head, body);
  }

  // ------------------------------------------------------------------ playing a segment

  function stopPlayback() {
    const player = $("player");
    if (!player.paused) player.pause();
    clearInterval(state.watch);
    state.watch = null;
    state.stopAt = null;
    for (const node of document.querySelectorAll(".segment.playing")) node.classList.remove("playing");
    state.playing = null;
  }

  function watchPlayback() {
    const player = $("player");
    const t = player.currentTime;
    if (state.stopAt !== null && t >= state.stopAt) {
      player.pause();
      $("now-playing").textContent = `Played ${$("now-playing").dataset.span || ""}`;
      stopPlayback();
      return;
    }
    const ms = 1000 * t;
    for (const word of document.querySelectorAll("#words .word")) {
      word.classList.toggle("current", ms >= num(word.dataset.startMs) && ms < num(word.dataset.endMs));
    }
  }

  function playSegment(segment) {
    const player = $("player");
    if (!state.audioUrl) return;
    stopPlayback();
    const start = num(segment.start_ms) / 1000;
    const end = num(segment.end_ms) / 1000;
    state.playing = segment.index;
    const button = $(`segment-${segment.index}`);
    if (button) button.classList.add("playing");
    const span = `${segment.speaker} ${seconds(segment.start_ms)}–${seconds(segment.end_ms)}`;
    $("now-playing").dataset.span = span;
    $("now-playing").dataset.index = String(segment.index);
    $("now-playing").textContent = `Playing ${span}`;
    const go = () => {
      player.currentTime = start;
      state.stopAt = end;
      state.watch = setInterval(watchPlayback, 30);
      const playing = player.play();
      if (playing && playing.catch) {
        playing.catch((error) => {
          $("now-playing").textContent = `The browser would not play it: ${error.message}`;
        });
      }
    };
    if (player.readyState >= 1) go();
    else player.addEventListener("loadedmetadata", go, {once: true});
  }

  // ------------------------------------------------------------------ start

  document.addEventListener("DOMContentLoaded", () => {
    setUpDropZone();
    $("analyze-form").addEventListener("submit", submit);
    $("cancel").addEventListener("click", () => state.xhr && state.xhr.abort());
    const abstentions = $("show-abstained");
    abstentions.addEventListener("change", () => $("flagged").classList.toggle("hide-abstained", !abstentions.checked));
    // The user paused the player mid-span (a pause that play() has already overtaken is not one).
    $("player").addEventListener("pause", () => {
      if (state.stopAt !== null && $("player").paused) stopPlayback();
    });
    checkHealth();
    document.body.dataset.ready = "true";
  });
})();
