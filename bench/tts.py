"""Piper TTS latency: time to first audio and real-time factor, streamed by `PiperTTS` vs two baselines.

For each text: `cold` is the first synthesis of a freshly loaded voice; `warm` the median and p90 of --runs
later ones. Baselines, measured in the same run, alternating with the streamed runs: `pieces` is `PiperTTS` with
`stream=False` (the same pieces, each synthesized whole: the vocoder not run span by span); `naive` synthesizes the
whole text with Piper's own `PiperVoice.synthesize` before returning anything (what a non-streaming TTS costs).
`gain` is naive first audio / streamed first audio. RTF = synthesis time / audio duration.

    .venv/bin/python bench/tts.py --runs 7 --json /tmp/tts.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from piper.config import PiperConfig
from piper.voice import PiperVoice

from voxline.audio.frame import AudioFrame
from voxline.models.store import ModelStore, disable_hubs
from voxline.providers.piper import DEFAULT_MODEL, PiperTTS

TEXTS = {
    "short (2 words)": "Okay, sure.",
    "medium (8 words)": "Sure, I can help you with that today.",
    "reply (2 sentences)": "Your table for four is booked for eight tonight. Is there anything else I can do?",
    "long (30 words)": ("The quickest way to the station is to walk down the main street, turn left at the bakery, "
                        "and follow the signs for about ten minutes until you see the big clock."),
    "paragraph (5 sentences)": ("Thanks for calling. Your order has shipped this morning. It should arrive on "
                                "Thursday before noon. You will get a text message with the tracking link. "
                                "Is there anything else I can help you with today?"),
}


@dataclass
class Row:
    text: str
    words: int
    audio_s: float
    cold_first_ms: float
    warm_first_ms_median: float
    warm_first_ms_p90: float
    warm_total_ms_median: float
    rtf_median: float
    pieces_first_ms_median: float
    naive_first_ms_median: float
    gain: float


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


async def streamed(tts: PiperTTS, text: str) -> tuple[float, float, float]:
    """Seconds to the first frame, seconds to the end, seconds of audio."""
    start = time.perf_counter()
    first: float | None = None
    audio = 0.0
    async for frame in tts.synthesize(text):
        first = first if first is not None else time.perf_counter() - start
        audio += frame.duration
    assert first is not None
    return first, time.perf_counter() - start, audio


def naive_voice(threads: int) -> PiperVoice:
    """Piper's own voice object on the whole graph, as Piper's README loads it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = ModelStore().path("piper-joe") / DEFAULT_MODEL
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text())))


def naive(voice: PiperVoice, text: str) -> float:
    """Seconds until the whole text is synthesized by Piper in one call (nothing can play before)."""
    start = time.perf_counter()
    chunks = [c.audio_float_array for c in voice.synthesize(text)]
    AudioFrame.from_float(np.concatenate(chunks), voice.config.sample_rate)
    return time.perf_counter() - start


async def measure(runs: int, threads: int, spin: bool) -> list[Row]:
    rows = []
    voice = naive_voice(threads)
    whole = PiperTTS(threads=threads, spin_wait=spin, stream=False)
    await streamed(whole, "Warm up.")
    for label, text in TEXTS.items():
        tts = PiperTTS(threads=threads, spin_wait=spin)  # fresh voice: the first synthesis is the cold one
        try:
            cold_first, _, _ = await streamed(tts, text)
            firsts, totals, rtfs, pieces, naives = [], [], [], [], []
            audio_s = 0.0
            for _ in range(runs):
                first, total, audio_s = await streamed(tts, text)
                firsts.append(first)
                totals.append(total)
                rtfs.append(total / audio_s)
                pieces.append((await streamed(whole, text))[0])
                naives.append(naive(voice, text))
        finally:
            tts.close()
        rows.append(Row(label, len(text.split()), round(audio_s, 2), round(cold_first * 1000, 1),
                        round(statistics.median(firsts) * 1000, 1), round(p90(firsts) * 1000, 1),
                        round(statistics.median(totals) * 1000, 1), round(statistics.median(rtfs), 3),
                        round(statistics.median(pieces) * 1000, 1), round(statistics.median(naives) * 1000, 1),
                        round(statistics.median(naives) / statistics.median(firsts), 2)))
    whole.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="warm runs per text")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads per synthesis")
    parser.add_argument("--spin", action="store_true", help="let onnxruntime threads busy-wait (spin_wait)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    disable_hubs()
    rows = asyncio.run(measure(args.runs, args.threads, args.spin))
    print(f"Piper joe-medium, {args.threads} threads{', spinning' if args.spin else ''}, {args.runs} warm runs; "
          "first audio in ms")
    print(f"{'text':<24} {'audio s':>7} {'cold':>7} {'warm med':>8} {'p90':>7} {'total':>7} {'RTF':>6} "
          f"{'pieces':>7} {'naive':>7} {'gain':>5}")
    for r in rows:
        print(f"{r.text:<24} {r.audio_s:>7.2f} {r.cold_first_ms:>7.0f} {r.warm_first_ms_median:>8.0f} "
              f"{r.warm_first_ms_p90:>7.0f} {r.warm_total_ms_median:>7.0f} {r.rtf_median:>6.3f} "
              f"{r.pieces_first_ms_median:>7.0f} {r.naive_first_ms_median:>7.0f} {r.gain:>5.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "threads": args.threads, "spin": args.spin,
                                         "rows": [asdict(r) for r in rows]}, indent=2))


if __name__ == "__main__":
    main()
