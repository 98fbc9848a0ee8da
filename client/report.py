"""`--report`: one figure per call (matplotlib), written as a self-contained HTML page (the figure
inline as SVG, no external files) and as a PNG for pasting into tickets.

The figure: the sentiment timeline per speaker (the judgement score of each segment, one
trace per speaker, SVG id `timeline-<speaker>`), the emotion timeline per speaker (each
segment coloured by its top emotion), talk-time bars (talk, overlap, silence) and the flagged
segments. The HTML page adds the per-speaker numbers, every flagged segment in full and, folded, every
segment; each word of a transcript there shows its time when pointed at (a tooltip).
"""
from __future__ import annotations

import html
import io
import math
import re
import warnings
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from toneserve.client.results import Result, Segment

# emotion2vec+'s labels; a label set of another model gets the colours of matplotlib's cycle.
EMOTION_COLOURS = {"angry": "#d62728", "disgusted": "#8c564b", "fearful": "#9467bd", "happy": "#f2b701",
                   "neutral": "#7f95ab", "other": "#c4c4c4", "sad": "#1f77b4", "surprised": "#17becf",
                   "unknown": "#e2e2e2"}
TABLE_ROWS = 15  # flagged segments in the figure; the HTML page lists them all
TRANSCRIPT_CHARS = 60
# Tried after DejaVu Sans for characters it lacks (Chinese, Japanese, Korean transcripts), where installed.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "Droid Sans Fallback")
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS: untrained models answered; these numbers only test the plumbing"


def svg_id(speaker: str) -> str:
    """A speaker name as an SVG/HTML id fragment."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", speaker)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _span(segment: Segment) -> str:
    return f"{segment.start:.1f}–{segment.end:.1f} s"


def _transcript(segment: Segment) -> str:
    """The segment's transcript as HTML, each of its words (Segment.words) a span whose tooltip is its time."""
    e = html.escape
    text, parts, at = segment.transcript, [], 0
    for word in segment.words:
        found = text.find(word.text, at)
        if found < 0:  # not where the transcript has it: left as plain text
            continue
        parts.append(e(text[at:found]))
        parts.append(f"<span class=\"word\" title=\"{word.start:.2f}–{word.end:.2f} s\">{e(word.text)}</span>")
        at = found + len(word.text)
    parts.append(e(text[at:]))
    return "".join(parts)


def _emotion_colour(label: str, labels: list[str]) -> str:
    return EMOTION_COLOURS.get(label, f"C{labels.index(label) % 10}" if label in labels else "#888888")


def figure(result: Result, title: str) -> Figure:
    speakers = [s.speaker for s in result.speakers]
    colours = {name: f"C{i % 10}" for i, name in enumerate(speakers)}
    by_speaker = {name: [s for s in result.segments if s.speaker == name] for name in speakers}
    flagged = result.flagged()
    shown = flagged[:TABLE_ROWS]
    rows = max(1, len(speakers))
    heights = [3.0, 0.45 * rows + 0.9, 0.4 * (rows + 1) + 0.9, 0.28 * (len(shown) + 1) + 0.6]
    fig = Figure(figsize=(12, sum(heights) + 1.0), layout="constrained")
    sentiment, emotion, talk, table = fig.subplots(4, 1, height_ratios=heights)
    emotion.sharex(sentiment)
    duration = result.call.duration_seconds or result.metadata.audio_seconds

    # Sentiment: each segment's score held over the segment; gaps where the speaker is silent.
    brk = result.metadata.thresholds.sentiment_break or 1 / 3
    sentiment.axhspan(-brk, brk, color="0.94", zorder=0)
    sentiment.axhline(0, color="0.6", lw=0.8)
    for name in speakers:
        xs, ys = [], []
        for segment in by_speaker[name]:
            xs += [segment.start, segment.end, math.nan]
            ys += [segment.judgement.score, segment.judgement.score, math.nan]
        sentiment.plot(xs, ys, color=colours[name], lw=3, solid_capstyle="butt", label=name,
                       gid=f"timeline-{svg_id(name)}")
    if flagged:
        sentiment.scatter([(s.start + s.end) / 2 for s in flagged], [s.judgement.score for s in flagged],
                          s=40, facecolors="none", edgecolors="#d62728", linewidths=1.5, zorder=3, label="flagged")
    sentiment.set(xlim=(0, duration), ylim=(-1.05, 1.05), ylabel="score",
                  title="Sentiment per speaker (words and tone; grey band: neutral)")
    sentiment.legend(loc="upper right", fontsize=8, ncols=len(speakers) + 1)

    # Emotion: one lane per speaker, each segment coloured by its top emotion.
    labels = list(result.metadata.emotion_labels)
    for lane, name in enumerate(speakers):
        segments = by_speaker[name]
        emotion.broken_barh([(s.start, s.end - s.start) for s in segments], (lane - 0.4, 0.8),
                            facecolors=[_emotion_colour(s.emotion.top, labels) for s in segments],
                            edgecolors="0.45", linewidths=0.5, gid=f"emotions-{svg_id(name)}")
    emotion.set_yticks(range(len(speakers)), speakers)
    emotion.set(ylim=(len(speakers) - 0.5, -0.5), xlabel="seconds", title="Top emotion per segment (tone)")
    present = sorted({s.emotion.top for s in result.segments}, key=lambda e: labels.index(e) if e in labels else 99)
    if present:
        emotion.legend(handles=[Patch(facecolor=_emotion_colour(e, labels), edgecolor="0.45", label=e)
                                for e in present],
                       loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

    # Talk time: per speaker, talking alone / overlapping / not talking; then the whole call.
    rows_talk: list[tuple[str, float, float, float]] = [(s.speaker, s.talk_seconds - s.overlap_seconds, s.overlap_seconds, s.non_talk_seconds)
                 for s in result.speakers]
    call = result.call
    rows_talk.append(("whole call", call.talk_seconds - call.overlap_seconds, call.overlap_seconds,
                      call.non_talk_seconds))
    names = [r[0] for r in rows_talk]
    left = [0.0] * len(rows_talk)
    for column, (label, colour) in enumerate([("talk", "#4c9f70"), ("overlap", "#e3873b"),
                                              ("silence / not talking", "#d5d9de")], start=1):
        widths = [float(r[column]) for r in rows_talk]
        bars = talk.barh(names, widths, left=left, color=colour, label=label)
        talk.bar_label(bars, labels=[f"{w:.1f} s" if w >= 0.06 * duration else "" for w in widths],
                       label_type="center", fontsize=8)
        left = [a + b for a, b in zip(left, widths)]
    talk.invert_yaxis()
    talk.set(xlim=(0, max(left + [duration])), xlabel="seconds", title="Talk time")
    talk.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

    # Flagged segments.
    table.axis("off")
    table.set_title(f"Flagged segments ({len(flagged)})", loc="left")
    if shown:
        cells = [[_span(s), s.speaker, ", ".join(s.judgement.flags), _clip(s.transcript, TRANSCRIPT_CHARS)]
                 for s in shown]
        if len(flagged) > len(shown):
            cells.append(["", "", f"… {len(flagged) - len(shown)} more", "all of them are in the HTML report"])
        drawn = table.table(cellText=cells, colLabels=["time", "speaker", "flags", "transcript"],
                            colWidths=[0.12, 0.12, 0.2, 0.56], cellLoc="left", bbox=[0, 0, 1, 1])
        drawn.auto_set_font_size(False)
        drawn.set_fontsize(8)
    else:
        table.text(0.5, 0.5, "no flagged segments", ha="center", va="center", color="0.4")

    heading = (f"{title}: {duration:.1f} s, {len(result.segments)} segments, "
               f"average sentiment {call.average_sentiment:+.2f}")
    if call.verdict is not None:
        heading += "\n" + _clip(f"verdict ({call.verdict.model}): {call.verdict.sentiment} {call.verdict.score:+.2f}, "
                                 f"{call.verdict.reason}", 140)
    if result.metadata.random_weights:
        heading += "\n" + RANDOM_WEIGHTS_NOTE
    fig.suptitle(heading, color="#b00020" if result.metadata.random_weights else "black", fontsize=11)
    return fig


def _fonts() -> list[str]:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in CJK_FONTS if name in installed)]


def render(result: Result, title: str) -> tuple[str, bytes]:
    """The figure as inline SVG (text kept as text, so it stays searchable and small) and as PNG."""
    # Glyphs no installed font has would warn once per character; they show as boxes in the PNG only.
    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": _fonts()}), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig = figure(result, title)
        svg, png = io.StringIO(), io.BytesIO()
        fig.savefig(svg, format="svg")
        fig.savefig(png, format="png", dpi=110)
    text = svg.getvalue()
    return text[text.index("<svg"):], png.getvalue()


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
.warning { background: #fde8ea; border: 1px solid #b00020; color: #b00020; padding: .6em 1em; font-weight: 600; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
svg { max-width: 100%; height: auto; }
.meta { color: #555; }
span.word:hover { background: #fff3b0; }
"""


def page(result: Result, title: str, svg: str) -> str:
    """A complete HTML document: no scripts, no links, nothing fetched."""
    e = html.escape
    meta, call = result.metadata, result.call
    parts = [f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>toneserve report: {e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>",
             f"<h1>{e(title)}</h1>"]
    if meta.random_weights:
        parts.append(f"<p class=\"warning\">{e(RANDOM_WEIGHTS_NOTE)}.</p>")
    models = ", ".join(f"{m.name} {m.family} {m.preset} ({m.weights_origin}, {m.precision}"
                       f"{', ' + m.runtime if m.runtime else ''})" for m in meta.models)
    parts.append(f"<p class=\"meta\">{call.duration_seconds:.1f} s of {e(meta.container)}/{e(meta.codec)} at "
                 f"{meta.sample_rate_in} Hz, {meta.channels_in} channel(s); {len(result.segments)} segments; "
                 f"average sentiment {call.average_sentiment:+.2f}; {call.overlap_seconds:.1f} s overlapping, "
                 f"{call.interruptions} interruption(s), {call.non_talk_seconds:.1f} s silent. "
                 f"Request {e(meta.request_id)}, {meta.processing_ms:.0f} ms. Models: {e(models)}.</p>")
    verdict = call.verdict
    if verdict is not None:
        cited = ", ".join(_span(result.segments[i]) for i in verdict.segment_ids if 0 <= i < len(result.segments))
        parts.append(f"<p class=\"verdict\"><strong>Verdict</strong> ({e(verdict.model)}): {e(verdict.sentiment)} "
                     f"{verdict.score:+.2f}. {e(verdict.reason)}" + (f" <em>Resting on {e(cited)}.</em>" if cited else "")
                     + "</p>")
    parts.append(f"<figure>\n{svg}\n</figure>")
    parts.append("<h2>Speakers</h2>\n<table>\n<tr><th>speaker</th><th>channel</th><th>segments</th><th>talk s</th>"
                 "<th>overlap s</th><th>average sentiment</th><th>emotion</th><th>interruptions</th>"
                 "<th>words/min</th><th>flagged</th></tr>")
    for s in result.speakers:
        parts.append(f"<tr><td>{e(s.speaker)}</td><td class=\"num\">{s.channel}</td><td class=\"num\">{s.segments}</td>"
                     f"<td class=\"num\">{s.talk_seconds:.1f}</td><td class=\"num\">{s.overlap_seconds:.1f}</td>"
                     f"<td class=\"num\">{s.average_sentiment:+.2f}</td><td>{e(s.emotion.top)}</td>"
                     f"<td class=\"num\">{s.interruptions}</td><td class=\"num\">{s.speaking_rate_wpm:.0f}</td>"
                     f"<td class=\"num\">{s.flagged_segments}</td></tr>")
    parts.append("</table>")
    flagged = result.flagged()
    parts.append(f"<h2>Flagged segments ({len(flagged)})</h2>")
    if flagged:
        parts.append("<table>\n<tr><th>time</th><th>speaker</th><th>sentiment</th><th>emotion</th><th>flags</th>"
                     "<th>transcript</th></tr>")
        for segment in flagged:
            parts.append(f"<tr><td>{_span(segment)}</td><td>{e(segment.speaker)}</td>"
                         f"<td>{e(segment.judgement.sentiment)} {segment.judgement.score:+.2f}</td>"
                         f"<td>{e(segment.emotion.top)} {segment.emotion.probability:.2f}</td>"
                         f"<td>{e(', '.join(segment.judgement.flags))}</td><td>{_transcript(segment)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    parts.append(f"<details id=\"segments\">\n<summary>All segments ({len(result.segments)}); point at a word for "
                 "its time</summary>\n<table>\n<tr><th>time</th><th>speaker</th><th>sentiment</th><th>emotion</th>"
                 "<th>transcript</th></tr>")
    for segment in result.segments:
        parts.append(f"<tr><td>{_span(segment)}</td><td>{e(segment.speaker)}</td>"
                     f"<td>{e(segment.judgement.sentiment)} {segment.judgement.score:+.2f}</td>"
                     f"<td>{e(segment.emotion.top)} {segment.emotion.probability:.2f}</td>"
                     f"<td>{_transcript(segment)}</td></tr>")
    parts.append("</table>\n</details>")
    if meta.warnings:
        parts.append("<h2>Warnings</h2>\n<ul>" + "".join(f"<li>{e(w)}</li>" for w in meta.warnings) + "</ul>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def write_report(result: Result, title: str, folder: str | Path, name: str) -> tuple[Path, Path]:
    """FOLDER/<name>.html and FOLDER/<name>.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    svg, png = render(result, title)
    html_path, png_path = folder / f"{name}.html", folder / f"{name}.png"
    html_path.write_text(page(result, title, svg), encoding="utf-8")
    png_path.write_bytes(png)
    return html_path, png_path
