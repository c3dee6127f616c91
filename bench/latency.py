"""Voice-to-voice latency of full offline turns through the WebSocket, on the recorded dev speech.

For each file: connect a real `websockets` client to a real uvicorn server running the offline stack, send the
utterance (the body faster than real time, the last second and the trailing silence in real time, so endpointing
waits as long as it would for a live caller), and time from the last voiced frame sent to the first reply audio
byte received. The server's own per-stage timeline comes back as the `timeline` event (with `drafted`: the reply
took over a draft made in the pause, and `drafts`: the drafts started in the turn, each one not adopted thrown
away; the summary sums both). A reply to a turn ended
too early (inside the utterance, then cut by the speaker going on) is counted as premature, not timed: the turn
measured is the one answered after the speech really ended.

Baseline, same run: the sequential pipeline without overlap (batch STT with the padded 30 s window after the turn,
the whole LLM reply, the whole TTS of that reply), timed on the same providers.

    .venv/bin/python bench/latency.py --limit 20 --plot latency.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import websockets  # noqa: E402

from serving import serving  # noqa: E402
from voxline.agent.config import AgentConfig  # noqa: E402
from voxline.agent.stack import Stack, build_stack  # noqa: E402
from voxline.agent.timeline import STAGES  # noqa: E402
from voxline.audio.codecs import read_audio  # noqa: E402
from voxline.audio.frame import AudioFrame  # noqa: E402
from voxline.models.store import disable_hubs  # noqa: E402
from voxline.providers.base import Message  # noqa: E402
from voxline.server import create_app  # noqa: E402

SHARED = Path(os.environ.get("VOXLINE_SHARED", REPO.parent / "shared"))
SPEECH = SHARED / "data" / "speech"
console = Console(stderr=True)


def last_voiced(audio: AudioFrame, threshold_dbfs: float = -40.0) -> float:
    """End time of the last 20 ms frame louder than `threshold_dbfs`: where the speech really ends."""
    x = audio.mono_float32()
    n = len(x) // 320
    rms = np.sqrt(np.mean(x[: n * 320].reshape(n, 320) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms) > threshold_dbfs)[0]
    return float((loud[-1] + 1) * 0.02) if len(loud) else audio.duration


async def one_turn(url: str, audio: AudioFrame, fast: float) -> dict[str, Any]:
    speech_end = last_voiced(audio)
    clip = AudioFrame.concat([audio.slice(0, speech_end), AudioFrame.silence(4.0, 16000)])
    frames = list(clip.chunks(0.02))
    realtime_from = max(0, int((speech_end - 1.0) / 0.02))
    result: dict[str, Any] = {}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000, "output_sample_rate": 24000}))
        json.loads(await ws.recv())

        async def send() -> None:
            t0 = None
            for k, frame in enumerate(frames):
                if k < realtime_from:
                    await asyncio.sleep(0.02 / fast)
                else:
                    t0 = t0 or time.monotonic() - (k - realtime_from) * 0.02
                    await asyncio.sleep(max(0.0, t0 + (k - realtime_from) * 0.02 - time.monotonic()))
                await ws.send(frame.pcm())
                if (k + 1) * 0.02 >= speech_end and "speech_end" not in result:
                    result["speech_end"] = time.monotonic()

        sender = asyncio.create_task(send())
        first_audio: float | None = None  # of the reply in progress
        interrupted = False
        result["premature_replies"] = 0
        try:
            async with asyncio.timeout(60):
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        first_audio = first_audio or time.monotonic()
                        continue
                    event = json.loads(message)
                    if event["type"] == "reply_started":
                        first_audio = None
                    elif event["type"] == "transcript" and event["final"]:
                        result["transcript"] = event["text"]
                    elif event["type"] == "agent_done":
                        interrupted = event["interrupted"]
                        if interrupted:  # a reply to a turn ended too early, cut when the speaker went on
                            result["premature_replies"] += 1
                        else:
                            result["reply"] = event["text"]
                            if first_audio is not None:
                                result["first_audio"] = first_audio
                    elif event["type"] == "timeline" and not interrupted:
                        result["timeline"] = event
                        break
        finally:
            sender.cancel()
    if "first_audio" in result and "speech_end" in result:
        result["v2v_ms"] = (result["first_audio"] - result["speech_end"]) * 1000
    return result


async def sequential_baseline(stack: Stack, config: AgentConfig, audio: AudioFrame) -> float:
    """No overlap: padded batch STT, then the whole LLM reply, then the whole TTS; ms to the first audio."""
    t0 = time.monotonic()
    transcribe: Any = stack.stt.transcribe
    try:
        transcript = await transcribe(audio, window="padded")
    except TypeError:
        transcript = await transcribe(audio)
    messages = [Message("system", config.agent.system_prompt), Message("user", transcript.text or "hello")]
    reply = "".join([d.text async for d in stack.llm.stream(messages, max_tokens=config.agent.max_tokens)])
    frames = [f async for f in stack.tts.synthesize(reply or "Sorry?")]
    assert frames
    return (time.monotonic() - t0) * 1000


def files(limit: int | None) -> list[Path]:
    rows = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines()]
    paths = [SPEECH / r["file"] for r in rows]
    return paths[:limit] if limit else paths


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES[1:7]]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(results) + 1.5))
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for i, r in enumerate(results):
        ms = r.get("timeline", {}).get("stages_ms", {})
        prev = 0.0
        for j, stage in enumerate(stages):
            if stage in ms:
                ax.barh(i, ms[stage] - prev, left=prev, color=colors[j], label=stage if i == 0 else None)
                prev = ms[stage]
    ax.set_yticks(range(len(results)), [Path(r["file"]).stem[:24] for r in results], fontsize=7)
    ax.set_xlabel("ms after the end of the user's speech")
    ax.set_title("voxline turn timeline per utterance (offline stack, 2 cores)")
    ax.legend(loc="lower right", fontsize=7)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> None:
    # The TTS cache stays off: these replies repeat from run to run, and a hit would time the cache, not Piper.
    config = AgentConfig.load(args.config, cache={"enabled": False})
    console.print("loading the offline stack ...")
    stack = build_stack(config)
    app = create_app(stack, config)
    results: list[dict[str, Any]] = []
    baselines: list[float] = []
    async with serving(app) as base:
        url = base.replace("http", "ws") + "/ws"
        await one_turn(url, read_audio(files(1)[0]).to_mono().resample(16000), args.fast)  # warm-up
        for path in track(files(args.limit), description="turns", console=console):
            audio = read_audio(path).to_mono().resample(16000)
            r = await one_turn(url, audio, args.fast)
            r["file"], r["duration_s"] = str(path.relative_to(SPEECH)), audio.duration
            results.append(r)
            if args.baseline_every and len(results) % args.baseline_every == 1:
                baselines.append(await sequential_baseline(stack, config, audio))
    v2v = [r["v2v_ms"] for r in results if "v2v_ms" in r]
    table = Table(title=f"per-stage ms after speech end (server timeline), {len(results)} turns")
    table.add_column("stage")
    table.add_column("median", justify="right")
    table.add_column("p90", justify="right")
    for stage in STAGES[1:]:
        vals = [r["timeline"]["stages_ms"][stage] for r in results
                if stage in r.get("timeline", {}).get("stages_ms", {})]
        if vals:
            table.add_row(stage, f"{statistics.median(vals):.0f}", f"{pct(vals, 90):.0f}")
    Console().print(table)
    summary = {"turns": len(results), "replies": len(v2v), "v2v_ms_median": round(statistics.median(v2v), 1),
               "v2v_ms_p90": round(pct(v2v, 90), 1),
               "premature_replies": sum(r["premature_replies"] for r in results),
               "drafted_replies": sum(bool(r.get("timeline", {}).get("drafted")) for r in results),
               "drafts_started": sum(r.get("timeline", {}).get("drafts", 0) for r in results),
               "median_turn_s": round(statistics.median(r["duration_s"] for r in results), 2)}
    if baselines:
        summary["sequential_baseline_ms_median"] = round(statistics.median(baselines), 1)
        summary["speed_up_vs_sequential"] = round(statistics.median(baselines) / summary["v2v_ms_median"], 2)
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "turns": results}, indent=2, default=str))
    if args.plot:
        plot(results, args.plot)
        console.print(f"timeline plot written to {args.plot}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=20, help="number of dev files (0: all 184)")
    ap.add_argument("--fast", type=float, default=4.0, help="speed-up for the body of each utterance")
    ap.add_argument("--config", type=Path, help="agent config (TOML)")
    ap.add_argument("--baseline-every", type=int, default=4, help="run the sequential baseline on every Nth file")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="write a per-turn timeline chart (PNG)")
    args = ap.parse_args()
    disable_hubs()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
