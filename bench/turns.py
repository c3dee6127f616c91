"""Turn-detection benchmark: premature ends against end delay, per detector and policy setting.

Two-part turns are built from the dev speech (`multi/`, 5 speakers x 10 utterances): the first ~2-4 s of one
utterance, cut at a random word boundary after a word Whisper wrote without punctuation (so it stops mid-sentence),
a pause of 0.4-1.2 s, then the last ~2-4 s of another utterance of the same speaker, starting at a word gap (so the
turn ends where the reader ended a sentence), then 3 s of silence. Single utterances from `single/` (whole, <= 12 s:
34 of them) are the controls. Pauses and silences are filled with the recording's own background noise (digital
zeros would make every VAD look perfect). Word gaps come from faster-whisper word timestamps; the true start and end
of speech from the energy envelope (`speech_span`), which neither VAD under test has a hand in (Whisper's word ends
run 0.2-0.5 s early on these files).

The smart detectors get the transcript the session gives them: at each `silence` the turn so far is decoded with
the product's FINAL decoder (`WhisperSTT`, short window with padded fallback, beam 5) and handed to
`set_transcript` after `--stt-latency` seconds of stream time (`--stt-fallback-latency` when the short window
handed the clip to the padded one, which costs a padded decode more).

Everything slow is cached on disk under `--cache` (transcripts and Smart Turn verdicts per turn and clip) and
Silero's probabilities in memory per turn, so after the first run a grid over policy parameters (`--grid`)
re-runs in seconds per setting.

    .venv/bin/python bench/turns.py --n 25 --controls 25 --json /tmp/turns.json
    .venv/bin/python bench/turns.py --n 25 --controls 25 --grid --json /tmp/turns-grid.json
    .venv/bin/python bench/turns.py --vad-batch          # Silero cost per window at batch 1 vs 100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxline.agent.turns import TurnEvent, TurnOptions, make_turn_detector, transcript_signal
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.models.store import ModelStore, disable_hubs
from voxline.providers.silero import SileroVAD
from voxline.providers.smart_turn import SmartTurnModel
from voxline.providers.whisper import WhisperSTT

SPEECH = Path(os.environ.get("VOXLINE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "speech"
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
    singles = [r["file"] for r in manifest if r["file"].startswith("single/") and r["duration_s"] <= 12.0]
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


def _smart(label: str, **kw: Any) -> Setting:
    return Setting(label, TurnOptions(detector="smart", **kw), True)


OLD = {"complete_silence_s": 1.6, "unknown_silence_s": 1.6, "not_done_threshold": 0.0}  # the 2-tier policy before

SETTINGS = [
    Setting("energy 0.3 s (seed)", TurnOptions(detector="energy", energy_silence_s=0.3)),
    Setting("energy 0.6 s", TurnOptions(detector="energy", energy_silence_s=0.6)),
    *[Setting(f"silero {s} s", TurnOptions(detector="silero", silence_s=s)) for s in (0.5, 0.6, 0.8, 1.0, 1.5)],
    Setting("smart-turn alone (>=0.5), cap 1.6", TurnOptions(detector="smart", use_transcript=False,
                                                             turn_threshold=0.5, not_done_threshold=0.0)),
    _smart("transcript alone, cap 1.6", turn_threshold=0.0, not_done_threshold=0.0, **{
        k: v for k, v in OLD.items() if k != "not_done_threshold"}),
    _smart("old: ST>=0.8 + transcript, cap 1.6", **OLD),
    _smart("tiers, STT and model at 0.25 s", pause_s=0.25, silence_event_s=0.25),  # before 12-01
    _smart("tiers, STT at 0.1 s, model at 0.25 s", pause_s=0.25),
    _smart("tiers, model asked at the pause", model_lead_s=0.0),  # before 12-02
    _smart("tiers, defaults"),
]


def grid(pauses: list[float]) -> list[Setting]:
    """The tiered policy over its parameters (cap 1.6 s, tier 1 at Smart Turn >= 0.8), for each pause length."""
    out = []
    for pause in pauses:
        out.append(_smart(f"old 2-tier, pause {pause}", pause_s=pause, **OLD))
        for unknown in (0.6, 0.8, 1.0, 1.6):
            for veto in (0.0, 0.1, 0.2, 0.3, 0.5):
                for complete in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
                    out.append(_smart(f"pause {pause} complete {complete} veto<{veto} unknown {unknown}",
                                      pause_s=pause, complete_silence_s=complete, not_done_threshold=veto,
                                      unknown_silence_s=unknown))
    return out


class CachedModel:
    """Smart Turn with its verdicts cached on disk per (turn, clip): the policy grid never re-runs the model."""

    def __init__(self, model: SmartTurnModel, cache: dict[str, Any]) -> None:
        self.model, self.name, self.cache = model, model.name, cache
        self.turn = ""
        self.last: float | None = None
        self.calls_ms: list[float] = []

    async def completion_probability(self, audio: AudioFrame) -> float:
        key = f"{self.turn}|{audio.timestamp:.3f}|{audio.duration:.3f}"
        if key not in self.cache:
            t = time.perf_counter()
            self.cache[key] = await self.model.completion_probability(audio)
            self.calls_ms.append((time.perf_counter() - t) * 1000)
        self.last = float(self.cache[key])
        return self.last


class PauseSTT:
    """The product's pause-time final decode (`WhisperSTT`, as `WhisperStream.pause()` runs it), cached on disk per
    (turn, clip): text, decode time and whether the short window fell back to the padded one."""

    def __init__(self, cache: dict[str, Any]) -> None:
        self.stt: WhisperSTT | None = None
        self.cache = cache

    def __call__(self, turn: str, audio: AudioFrame, start: float, end: float) -> dict[str, Any]:
        key = f"{turn}|{start:.3f}|{end:.3f}"
        if key not in self.cache:
            self.stt = self.stt or WhisperSTT()
            t = time.perf_counter()
            transcript, fell_back = self.stt.decode_details(audio.slice(start, end), language="en")
            self.cache[key] = {"text": transcript.text, "ms": (time.perf_counter() - t) * 1000,
                               "fell_back": fell_back, "audio_s": end - start}
        return dict(self.cache[key])


class ReplayVAD:
    """Silero, recorded once per turn and replayed: every setting sees the same probabilities at no cost."""

    def __init__(self, vad: SileroVAD) -> None:
        self.vad, self.name, self.frame_duration = vad, vad.name, vad.frame_duration
        self.recorded: dict[str, list[list[tuple[int, float]]]] = {}
        self.turn = ""

    def stream(self) -> _ReplayStream:
        return _ReplayStream(self)


class _ReplayStream:
    """A `VADStream` with Silero's `windows()`: live (and taped) on a turn's first run, replayed after."""

    window_samples = 512

    def __init__(self, owner: ReplayVAD) -> None:
        self.owner = owner
        self.live = None if owner.turn in owner.recorded else owner.vad.stream()
        self.tape = owner.recorded.setdefault(owner.turn, []) if self.live else owner.recorded[owner.turn]
        self.i = 0

    async def windows(self, frame: AudioFrame) -> list[tuple[int, float]]:
        if self.live is not None:
            self.tape.append(list(await self.live.windows(frame)))
        self.i += 1
        return self.tape[self.i - 1]

    async def probability(self, frame: AudioFrame) -> float:
        found = await self.windows(frame)
        return found[-1][1] if found else 0.0

    def reset(self) -> None:
        if self.live is not None:
            self.live.reset()


@dataclass
class Context:
    turns: list[Turn]
    frames: dict[str, list[AudioFrame]]
    vad: ReplayVAD
    model: CachedModel
    stt: PauseSTT
    stt_latency: float
    fallback_latency: float
    pauses: list[dict[str, Any]] = field(default_factory=list)  # what the detector knew at each pause


async def run_one(turn: Turn, setting: Setting, ctx: Context) -> list[TurnEvent]:
    ctx.vad.turn = ctx.model.turn = turn.name
    detector = make_turn_detector(setting.options, vad=ctx.vad, model=ctx.model)
    events: list[TurnEvent] = []
    due: list[tuple[float, str]] = []  # transcripts in flight: (stream time they arrive, text)
    turn_start = 0.0
    for frame in ctx.frames[turn.name]:
        while due and due[0][0] <= frame.timestamp + 1e-9:
            detector.set_transcript(due.pop(0)[1])
        new = await detector.push(frame)
        events += new
        for e in new:
            if e.kind == "turn_ended":
                turn_start, due = e.time, []
            elif e.kind == "silence" and setting.transcript:  # as the session: the STT hears of the pause here
                r = ctx.stt(turn.name, turn.audio, turn_start, e.time)
                latency = ctx.fallback_latency if r["fell_back"] else ctx.stt_latency
                due.append((e.time + latency, r["text"]))
                ctx.pauses.append({"turn": turn.name, "time": e.time, "two_part": turn.pause is not None,
                                   "true_end": bool(e.time > turn.speech_end), "text": r["text"],
                                   "signal": transcript_signal(r["text"]), "fell_back": r["fell_back"],
                                   "stt_ms": r["ms"], "audio_s": r["audio_s"],
                                   "p": ctx.model.last})
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


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


async def bench_turns(args: argparse.Namespace) -> dict[str, Any]:
    timer = WordTimer(Path.home() / ".cache" / "voxline" / "bench" / "turn-words-v2.json")
    turns = build_turns(args.n, args.controls, args.seed, timer)
    del timer  # its model is only needed to build the turns
    stt_cache, st_cache = _load(args.cache / "transcripts.json"), _load(args.cache / "smart-turn.json")
    ctx = Context(turns, {t.name: list(t.audio.chunks(FRAME_S)) for t in turns}, ReplayVAD(SileroVAD()),
                  CachedModel(SmartTurnModel(), st_cache), PauseSTT(stt_cache), args.stt_latency,
                  args.stt_fallback_latency)
    results: list[dict[str, Any]] = []
    try:
        for s in grid(args.grid_pause) if args.grid else SETTINGS:
            ctx.model.calls_ms.clear()
            ctx.pauses = []
            t0 = time.perf_counter()
            runs = [await run_one(t, s, ctx) for t in turns]
            r = {"setting": s.label, "options": asdict(s.options), **score(turns, runs),
                 "pauses_per_turn": len(ctx.pauses) / len(turns),
                 "smart_turn_ms_median": statistics.median(ctx.model.calls_ms) if ctx.model.calls_ms else None,
                 "wall_s": time.perf_counter() - t0}
            if s.label == "tiers, defaults" or s.label.startswith("old 2-tier"):
                r["pauses"] = ctx.pauses
            results.append(r)
            print_row(r)
    finally:
        _save(args.cache / "transcripts.json", stt_cache)
        _save(args.cache / "smart-turn.json", st_cache)
    decodes = list(stt_cache.values())
    short = [d["ms"] for d in decodes if not d["fell_back"]]
    padded = [d["ms"] for d in decodes if d["fell_back"]]
    return {"n_two_part": args.n, "n_controls": args.controls, "seed": args.seed,
            "stt_latency_s": args.stt_latency, "stt_fallback_latency_s": args.stt_fallback_latency,
            "pause_decodes": len(decodes), "pause_decodes_fell_back": len(padded),
            "pause_decode_ms_median_short": statistics.median(short) if short else None,
            "pause_decode_ms_median_fell_back": statistics.median(padded) if padded else None,
            "results": results}


def print_row(r: dict[str, Any]) -> None:
    if not getattr(print_row, "header", False):
        print(f"{'setting':40} {'premature':>10} {'in pause':>9} {'missed':>7} {'delay med':>10} {'p90':>6} "
              f"{'ctl prem':>9} {'ctl med':>8} {'ctl p90':>8} {'s':>5}")
        print_row.header = True  # type: ignore[attr-defined]
    tp, c = r["two_part"], r["controls"]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"{r['setting']:40} {tp['premature']:>4}/{tp['n']:<5} {tp['premature_in_pause']:>9} {tp['missed']:>7} "
          f"{f(tp['delay_median_s']):>10} {f(tp['delay_p90_s']):>6} {c['premature']:>4}/{c['n']:<4} "
          f"{f(c['delay_median_s']):>8} {f(c['delay_p90_s']):>8} {r['wall_s']:5.1f}", flush=True)


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
    p.add_argument("--controls", type=int, default=25, help="single-utterance control turns")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--stt-latency", type=float, default=0.2,
                   help="stream seconds from a pause to its transcript (short-window final decode)")
    p.add_argument("--stt-fallback-latency", type=float, default=1.0,
                   help="the same when the short window falls back to the padded one")
    p.add_argument("--grid", action="store_true", help="the tiered smart policy over its parameters")
    p.add_argument("--grid-pause", type=lambda x: [float(v) for v in x.split(",")], default=[0.25],
                   help="pause_s values for --grid, comma-separated")
    p.add_argument("--cache", type=Path, default=Path("/tmp/voxline-bench-turns"),
                   help="where transcripts and Smart Turn verdicts are cached between runs")
    p.add_argument("--vad-batch", action="store_true", help="only the Silero batching micro-benchmark")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    result = asyncio.run(bench_vad_batch(args) if args.vad_batch else bench_turns(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
