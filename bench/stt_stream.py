"""Whisper's streaming final on the recorded dev speech: what committing the words of a pause costs and saves.

Each file is fed as one live turn. Silero's `silence` events (0.1 s into each pause, as the session hears them) call
`pause()`, speech after them `resume()`, and the turn ends with `finalize()` after its trailing silence. Each pause's
decode is awaited before more audio goes in, so every commit the stream can make is made (a live caller who goes on
within ~0.3 s of a pause would skip some). Per `commit_min_s`, prints the word agreement of the final with the padded
decode of the whole file (no reference needed), the gold WER, and the time from the last pause to its words, which
is what a turn ending in that pause waits for. The padded decode of each file, timed alongside, is the baseline.

    .venv/bin/python bench/stt_stream.py --limit 60 --commit none,8,3 --json /tmp/stream.json
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stt import SPEECH, dev_files  # bench/stt.py: the same files for the same --limit and --seed
from voxline.agent.turns import TurnOptions, make_turn_detector
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.models.store import ModelStore, disable_hubs
from voxline.providers.base import Transcript
from voxline.providers.silero import SileroVAD
from voxline.providers.whisper import WhisperSTT
from voxline.wer import edit_distance, words

BUCKETS = ((0.0, 5.0), (5.0, 10.0), (10.0, 60.0))  # turn length, seconds
PAUSE_WAIT_S = 10.0  # a pause whose decode found no words sends nothing: stop waiting for it after this


async def one_turn(stt: WhisperSTT, vad: SileroVAD, audio: AudioFrame) -> dict[str, Any]:
    """Feed `audio` as one turn; the final's text and how long the last pause's words took (None: no words)."""
    detector = make_turn_detector(TurnOptions(detector="silero", silence_s=10.0, max_silence_s=10.0), vad)
    stream = stt.stream(16000, "en")
    out: asyncio.Queue[Transcript] = asyncio.Queue()

    async def read() -> None:
        async for t in stream:
            out.put_nowait(t)

    reader = asyncio.create_task(read())
    in_pause, pauses = False, 0
    last_wait: float | None = None
    for frame in AudioFrame.concat([audio, AudioFrame.silence(0.5, 16000)]).chunks(0.02):
        events = await detector.push(frame)
        if in_pause and detector.in_speech and not detector.silent:
            in_pause = False
            await stream.resume()
        await stream.send(frame)
        if any(e.kind == "silence" for e in events):
            in_pause, pauses = True, pauses + 1
            started = time.perf_counter()
            await stream.pause()
            try:
                while not (await asyncio.wait_for(out.get(), PAUSE_WAIT_S)).speculative:
                    pass
                last_wait = time.perf_counter() - started
            except TimeoutError:
                last_wait = None
    await stream.finalize()
    final = await asyncio.wait_for(out.get(), 60)
    while not final.is_final:
        final = await asyncio.wait_for(out.get(), 60)
    reader.cancel()
    await stream.close()
    return {"text": final.text, "pauses": pauses, "last_pause_words_s": last_wait}


def parse_commits(value: str) -> list[float | None]:
    return [None if v.strip().lower() == "none" else float(v) for v in value.split(",")]


@click.command()
@click.option("--limit", type=int, default=60, show_default=True,
              help="The gold files plus a random sample of N others (0: all).")
@click.option("--commit", "commits", default="none,8,3", show_default=True,
              help="commit_min_s values to compare, comma-separated ('none': never commit).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(limit: int, commits: str, seed: int, json_out: Path | None) -> None:
    disable_hubs()
    settings = parse_commits(commits)
    files = dev_files(limit or None, seed)
    # One worker and no interims: each pause's decode runs alone, so its time is the decode's, not a queue's.
    stt = WhisperSTT(num_workers=1, interim_interval_s=1e9, min_interim_s=1e9)
    vad = SileroVAD(ModelStore().path("silero-vad") / "silero_vad.onnx")
    console = Console(stderr=True)
    rows: list[dict[str, Any]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("turns", total=len(files))
        for m in files:
            audio = read_audio(SPEECH / m["file"]).to_mono().resample(16000)
            started = time.perf_counter()
            padded = stt.transcribe_sync(audio, "en", window="padded").text
            row: dict[str, Any] = {"file": m["file"], "duration_s": audio.duration, "reference": m["text"],
                                   "padded": {"text": padded, "seconds": time.perf_counter() - started}}
            for commit in settings:
                stt.commit_min_s = commit
                row[str(commit)] = asyncio.run(one_turn(stt, vad, audio))
            rows.append(row)
            bar.advance(task)
    stt.close()
    summary = summarize(rows, settings)
    print_summary(summary)
    if json_out is not None:
        json_out.write_text(json.dumps({"summary": summary, "files": rows}, indent=2))


def agreement(rows: list[dict[str, Any]], key: str) -> float:
    ref = sum(len(words(r["padded"]["text"])) for r in rows)
    return 1 - sum(edit_distance(words(r["padded"]["text"]), words(r[key]["text"])) for r in rows) / max(ref, 1)


def median_wait_ms(rows: list[dict[str, Any]], key: str) -> float:
    waits = [r[key]["last_pause_words_s"] for r in rows if r[key]["last_pause_words_s"] is not None]
    return 1000 * statistics.median(waits) if waits else float("nan")


def summarize(rows: list[dict[str, Any]], settings: list[float | None]) -> dict[str, Any]:
    gold = [r for r in rows if r["reference"]]
    gold_words = sum(len(words(r["reference"])) for r in gold)
    out: dict[str, Any] = {"files": len(rows), "audio_s": round(sum(r["duration_s"] for r in rows), 1)}
    for commit in settings:
        key = str(commit)
        entry: dict[str, Any] = {
            "agreement": agreement(rows, key),
            "gold_wer": sum(edit_distance(words(r["reference"]), words(r[key]["text"])) for r in gold) / gold_words
            if gold_words else None,
            "last_pause_words_ms_median": median_wait_ms(rows, key),
            "buckets": {},
        }
        for lo, hi in BUCKETS:
            part = [r for r in rows if lo <= r["duration_s"] < hi]
            if part:
                entry["buckets"][f"{lo:.0f}-{hi:.0f} s"] = {
                    "turns": len(part), "agreement": agreement(part, key),
                    "last_pause_words_ms_median": median_wait_ms(part, key)}
        out[key] = entry
    out["padded_ms_median"] = 1000 * statistics.median(r["padded"]["seconds"] for r in rows)
    return out


def print_summary(s: dict[str, Any]) -> None:
    keys = [k for k, v in s.items() if isinstance(v, dict)]
    buckets = list(s[keys[0]]["buckets"]) if keys else []
    head = f"{'commit_min_s':>12} {'agreement':>10} {'gold WER':>9} {'words ms':>9}" + "".join(
        f" | {b:>9} agr  ms" for b in buckets)
    lines = [f"{s['files']} turns, {s['audio_s']:.0f} s of audio; agreement with the padded decode of each file, "
             f"ms from the last pause to its words (median)", head]
    for key in keys:
        e = s[key]
        gold = f"{e['gold_wer']:9.1%}" if e["gold_wer"] is not None else f"{'-':>9}"
        cells = "".join(f" | {e['buckets'][b]['agreement']:13.1%} {e['buckets'][b]['last_pause_words_ms_median']:4.0f}"
                        if b in e["buckets"] else f" | {'-':>18}" for b in buckets)
        lines.append(f"{key:>12} {e['agreement']:10.2%} {gold} {e['last_pause_words_ms_median']:9.0f}{cells}")
    lines.append(f"baseline: padded decode of the whole file, {s['padded_ms_median']:.0f} ms median")
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
