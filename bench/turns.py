"""Turn-detection benchmark: premature ends against end delay, per detector and silence setting.

Two-part turns are built from the dev speech (`multi/`, 5 speakers x 10 utterances): the first ~2-4 s of one
utterance, cut at a random word boundary after a word Whisper wrote without punctuation (so it stops
mid-sentence), a pause of 0.4-1.2 s, then the last ~2-4 s of another
utterance of the same speaker, starting at a word gap (so the turn ends where the reader ended a sentence), then
3 s of silence. Single utterances from `single/` (whole, <= 8 s) are the controls. Pauses and silences are filled
with the recording's own background noise (digital zeros would make every VAD look perfect). Word gaps come from
faster-whisper word timestamps; the true start and end of speech from the energy envelope (`speech_span`), which
neither VAD under test has a hand in (Whisper's word ends run 0.2-0.5 s early on these files).

The smart detectors get an interim transcript as a streaming STT would give it: at each `pause` the audio of the
turn so far is transcribed (faster-whisper, whisper-base int8) and handed to `set_transcript` after
`--stt-latency` seconds of stream time.

    .venv/bin/python bench/turns.py --n 25 --json /tmp/turns.json
    .venv/bin/python bench/turns.py --vad-batch          # Silero cost per window at batch 1 vs 100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxline.agent.turns import TurnEvent, TurnOptions, make_turn_detector
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.models.store import ModelStore, disable_hubs
from voxline.providers.silero import SileroVAD
from voxline.providers.smart_turn import SmartTurnModel

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
RATE = 16000
FRAME_S = 0.02


# ---- building the turns ---------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One test turn: audio plus the true speech times (seconds)."""

    name: str
    audio: AudioFrame
    speech_end: float  # end of the last word: the turn is over from here on
    pause: tuple[float, float] | None = None  # (end of part 1, start of part 2) for two-part turns


class WordTimer:
    """Word times of whole utterances from faster-whisper, cached on disk so reruns are quick."""

    def __init__(self, cache: Path) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(ModelStore().path("whisper-base")), compute_type="int8", cpu_threads=2)
        self.cache = cache
        self.words: dict[str, list[tuple[float, float, str]]] = (
            json.loads(cache.read_text()) if cache.exists() else {})

    def __call__(self, file: str, audio: AudioFrame) -> list[tuple[float, float, str]]:
        if file not in self.words:
            segments, _ = self.model.transcribe(audio.mono_float32(), language="en", beam_size=1,
                                                word_timestamps=True, condition_on_previous_text=False)
            self.words[file] = [(w.start, w.end, w.word) for s in segments for w in (s.words or [])]
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            self.cache.write_text(json.dumps(self.words))
        return self.words[file]

    def transcribe(self, audio: AudioFrame) -> str:
        segments, _ = self.model.transcribe(audio.mono_float32(), language="en", beam_size=1,
                                            without_timestamps=True, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()


def _gap_cut(words: list[tuple[float, float, str]], lo: float, hi: float, rng: random.Random,
             mid_sentence: bool) -> tuple[float, float, float] | None:
    """A random word boundary in [lo, hi]: (end of the word before, start of the next, cut point). With
    `mid_sentence`, only after a word Whisper wrote without punctuation, so the first part stops mid-sentence."""
    gaps = [(e1, s2) for (_, e1, w1), (s2, _, _) in itertools.pairwise(words)
            if lo <= e1 <= hi and not (mid_sentence and w1.strip()[-1:] in ".,;:!?-\"")]
    if not gaps:
        return None
    e1, s2 = rng.choice(gaps)
    return e1, s2, (e1 + s2) / 2 if s2 > e1 else e1


def speech_span(audio: AudioFrame) -> tuple[float, float, np.ndarray]:
    """(start, end) of speech by the energy envelope, independent of both VADs: 10 ms frames at least 15 dB above
    the recording's noise floor (its 10th percentile) and within 40 dB of its peak (6 dB for very noisy files).
    Also returns a stretch of the recording's own background noise (before the speech) to fill pauses with."""
    x = audio.mono_float32()
    frames = x[: x.size // 160 * 160].reshape(-1, 160)
    db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    loud = np.nonzero(db > min(db.max() - 6, max(np.percentile(db, 10) + 15, db.max() - 40)))[0]
    start, end = loud[0] * 0.01, (loud[-1] + 1) * 0.01
    noise = x[: max(160, int((start - 0.05) * RATE))]
    return start, end, noise


def fill(noise: np.ndarray, seconds: float) -> AudioFrame:
    """`seconds` of background noise: the snippet played forwards and backwards in turn (no clicks at the seams)."""
    n = round(seconds * RATE)
    loop = np.concatenate([noise, noise[::-1]])
    return AudioFrame.from_float(np.resize(loop, n), RATE)


def build_turns(n: int, n_controls: int, seed: int, timer: WordTimer) -> list[Turn]:
    manifest = [json.loads(x) for x in (SPEECH / "manifest.jsonl").read_text().splitlines() if x.strip()]
    by_speaker: dict[str, list[str]] = {}
    for r in manifest:
        if r["file"].startswith("multi/"):
            by_speaker.setdefault(r["speaker"], []).append(r["file"])
    rng = random.Random(seed)
    turns: list[Turn] = []
    speakers = sorted(by_speaker)
    used: set[tuple[str, ...]] = set()
    while len(turns) < n:
        files = rng.sample(sorted(by_speaker[rng.choice(speakers)]), 2)
        if tuple(files) in used:
            continue
        used.add(tuple(files))
        a, b = (read_audio(SPEECH / f).to_mono().resample(RATE) for f in files)
        wa, wb = timer(files[0], a), timer(files[1], b)
        if len(wa) < 3 or len(wb) < 3:
            continue
        cut_a = _gap_cut(wa, 2.0, 4.0, rng, mid_sentence=True)
        cut_b = _gap_cut(wb, wb[-1][1] - 4.0, wb[-1][1] - 2.0, rng, mid_sentence=False) if b.duration > 4.5 \
            else (0.0, 0.0, 0.0)
        if cut_a is None or cut_b is None:
            continue
        part1, part2 = a.slice(0, cut_a[2]), b.slice(cut_b[2])
        _, end1, noise_a = speech_span(part1)
        start2, end2, _ = speech_span(part2)
        _, _, noise_b = speech_span(b)
        lead = fill(noise_a, 0.3)
        gap = rng.uniform(0.4, 1.2)
        audio = AudioFrame.concat([lead, part1, fill(noise_a, gap), part2, fill(noise_b, 3.0)])
        t2 = lead.duration + part1.duration + gap
        turns.append(Turn(f"{files[0]}+{files[1]}", audio, t2 + end2, (lead.duration + end1, t2 + start2)))
    singles = [r["file"] for r in manifest if r["file"].startswith("single/") and r["duration_s"] <= 8.0]
    for f in rng.sample(sorted(singles), n_controls):
        a = read_audio(SPEECH / f).to_mono().resample(RATE)
        _, end, noise = speech_span(a)
        lead = fill(noise, 0.3)
        turns.append(Turn(f, AudioFrame.concat([lead, a, fill(noise, 3.0)]), lead.duration + end))
    return turns


# ---- running the detectors ------------------------------------------------------------------------------------------


@dataclass
class Setting:
    label: str
    options: TurnOptions
    transcript: bool = False  # feed interim transcripts


SETTINGS = [
    Setting("energy 0.3 s (seed)", TurnOptions(detector="energy", energy_silence_s=0.3)),
    Setting("energy 0.6 s", TurnOptions(detector="energy", energy_silence_s=0.6)),
    *[Setting(f"silero {s} s", TurnOptions(detector="silero", silence_s=s)) for s in (0.5, 0.6, 0.8, 1.0, 1.5)],
    Setting("smart-turn alone, cap 1.6 s", TurnOptions(detector="smart", use_transcript=False,
                                                       max_silence_s=1.6)),
    Setting("transcript alone, cap 1.6 s", TurnOptions(detector="smart", turn_threshold=0.0,
                                                       max_silence_s=1.6), True),
    *[Setting(f"smart+transcript, cap {c} s", TurnOptions(detector="smart", max_silence_s=c), True)
      for c in (1.2, 1.6, 2.0)],
    Setting("smart(>=0.8)+transcript, cap 1.6 s", TurnOptions(detector="smart", turn_threshold=0.8,
                                                              max_silence_s=1.6), True),
]


@dataclass
class Outcome:
    events: list[TurnEvent] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)


class TimedModel:
    """Smart Turn wrapper that records how long each call took."""

    def __init__(self, model: SmartTurnModel) -> None:
        self.model, self.name, self.calls_ms = model, model.name, []  # type: list[float]

    async def completion_probability(self, audio: AudioFrame) -> float:
        t = time.perf_counter()
        p = await self.model.completion_probability(audio)
        self.calls_ms.append((time.perf_counter() - t) * 1000)
        return p


async def run_one(turn: Turn, setting: Setting, vad: SileroVAD, model: TimedModel,
                  transcribe: Callable[[AudioFrame], str], stt_latency: float) -> list[TurnEvent]:
    detector = make_turn_detector(setting.options, vad=vad, model=model)  # type: ignore[arg-type]
    events: list[TurnEvent] = []
    due: list[tuple[float, str]] = []  # transcripts in flight: (stream time they arrive, text)
    turn_start = 0.0
    for frame in turn.audio.chunks(FRAME_S):
        while due and due[0][0] <= frame.timestamp + 1e-9:
            detector.set_transcript(due.pop(0)[1])
        new = await detector.push(frame)
        events += new
        for e in new:
            if e.kind == "turn_ended":
                turn_start, due = e.time, []
            elif e.kind == "pause" and setting.transcript:
                text = transcribe(turn.audio.slice(turn_start, e.time))
                due.append((e.time + stt_latency, text))
    return events


def score(turns: list[Turn], runs: list[list[TurnEvent]]) -> dict[str, Any]:
    two = [(t, ev) for t, ev in zip(turns, runs, strict=True) if t.pause]
    ctl = [(t, ev) for t, ev in zip(turns, runs, strict=True) if not t.pause]

    def stats(items: list[tuple[Turn, list[TurnEvent]]]) -> dict[str, Any]:
        premature = in_pause = missed = 0
        delays = []
        for t, ev in items:
            ends = [e.time for e in ev if e.kind == "turn_ended"]
            early = [x for x in ends if x < t.speech_end - 0.05]
            premature += bool(early)
            if t.pause:
                in_pause += any(t.pause[0] <= x <= t.pause[1] + 0.2 for x in early)
            late = [x for x in ends if x >= t.speech_end - 0.05]
            if late:
                delays.append(late[0] - t.speech_end)
            else:
                missed += 1
        return {"n": len(items), "premature": premature, "premature_in_pause": in_pause, "missed": missed,
                "delay_median_s": statistics.median(delays) if delays else None,
                "delay_p90_s": float(np.percentile(delays, 90)) if delays else None}

    return {"two_part": stats(two), "controls": stats(ctl)}


async def bench_turns(args: argparse.Namespace) -> dict[str, Any]:
    timer = WordTimer(Path.home() / ".cache" / "voxline" / "bench" / "turn-words-v2.json")
    turns = build_turns(args.n, args.controls, args.seed, timer)
    vad = SileroVAD()
    model = TimedModel(SmartTurnModel())
    cache: dict[tuple[int, int], str] = {}
    stt_ms: list[float] = []

    def transcribe(audio: AudioFrame) -> str:
        key = (hash(audio), audio.num_frames)
        if key not in cache:
            t = time.perf_counter()
            cache[key] = timer.transcribe(audio)
            stt_ms.append((time.perf_counter() - t) * 1000)
        return cache[key]

    results = []
    for s in SETTINGS:
        model.calls_ms.clear()
        t0 = time.perf_counter()
        runs = [await run_one(t, s, vad, model, transcribe, args.stt_latency) for t in turns]
        r = {"setting": s.label, "options": asdict(s.options), **score(turns, runs),
             "smart_turn_calls": len(model.calls_ms),
             "smart_turn_ms_median": statistics.median(model.calls_ms) if model.calls_ms else None,
             "wall_s": time.perf_counter() - t0}
        results.append(r)
        print_row(r)
    return {"n_two_part": args.n, "n_controls": args.controls, "seed": args.seed, "stt_latency_s": args.stt_latency,
            "whisper_ms_median": statistics.median(stt_ms) if stt_ms else None, "results": results}


def print_row(r: dict[str, Any]) -> None:
    if not getattr(print_row, "header", False):
        print(f"{'setting':36} {'premature':>10} {'in pause':>9} {'missed':>7} {'delay med':>10} {'p90':>6} "
              f"{'ctl prem':>9} {'ctl delay':>10} {'ST calls':>9}")
        print_row.header = True  # type: ignore[attr-defined]
    tp, c = r["two_part"], r["controls"]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"{r['setting']:36} {tp['premature']:>4}/{tp['n']:<5} {tp['premature_in_pause']:>9} {tp['missed']:>7} "
          f"{f(tp['delay_median_s']):>10} {f(tp['delay_p90_s']):>6} {c['premature']:>4}/{c['n']:<4} "
          f"{f(c['delay_median_s']):>10} {r['smart_turn_calls']:>9}", flush=True)


# ---- Silero batching micro-benchmark --------------------------------------------------------------------------------


async def bench_vad_batch(args: argparse.Namespace) -> dict[str, Any]:
    vad = SileroVAD()
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"direct": {}, "streams": {}}
    print("direct inference (one ONNX run per batch, 1 thread):")
    for batch in (1, 10, 100):
        x = (rng.standard_normal((batch, 576)) * 0.1).astype(np.float32)
        state = np.zeros((2, batch, 128), np.float32)
        for _ in range(5):
            vad.infer(x, state, RATE)
        reps = max(20, 2000 // batch)
        t = time.perf_counter()
        for _ in range(reps):
            vad.infer(x, state, RATE)
        per_window_us = (time.perf_counter() - t) / reps / batch * 1e6
        out["direct"][batch] = per_window_us
        print(f"  batch {batch:>3}: {per_window_us:7.1f} us per window")
    speech = read_audio(SPEECH / "multi" / "1998-15444-0001.flac").to_mono().resample(RATE)
    print("through the async micro-batcher, N streams pushing 20 ms frames of real speech together:")
    for n in (1, 10, 100):
        streams = [vad.stream() for _ in range(n)]
        frames = list(speech.chunks(FRAME_S))

        async def feed(s: Any, frames: list[AudioFrame] = frames) -> int:
            count = 0
            for fr in frames:
                count += len(await s.windows(fr))
            return count

        t = time.perf_counter()
        windows = sum(await asyncio.gather(*[feed(s) for s in streams]))
        wall = time.perf_counter() - t
        rt = speech.duration * n / wall
        out["streams"][n] = {"us_per_window": wall / windows * 1e6, "realtime_streams": rt}
        print(f"  {n:>3} streams: {wall / windows * 1e6:7.1f} us per window, {rt:6.0f}x real time "
              f"(audio seconds per wall second, all streams)")
    return out


def main() -> None:
    disable_hubs()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=25, help="two-part turns")
    p.add_argument("--controls", type=int, default=10, help="single-utterance control turns")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--stt-latency", type=float, default=0.3, help="stream seconds from a pause to its transcript")
    p.add_argument("--vad-batch", action="store_true", help="only the Silero batching micro-benchmark")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    result = asyncio.run(bench_vad_batch(args) if args.vad_batch else bench_turns(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
