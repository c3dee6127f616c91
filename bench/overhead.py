"""Framework overhead per turn on the shared scenario (shared/bench/SCENARIO.md), voxline vs Pipecat, same run.

N simulated callers in ONE process send 16 kHz PCM16 in 20 ms frames paced by the clock: 0.5 s of silence, 2.0 s of
recorded speech, then silence until the reply has ended. Silero VAD (stop after 0.3 s of silence, start after 0.2 s),
scripted STT (final 100 ms after the turn ends), LLM (200 ms, then a word every 10 ms) and TTS (80 ms per sentence,
then 40 ms of 24 kHz audio per word in 20 ms chunks). Overhead = first reply audio out - last speech frame fed - the
720 ms of fixed delays. Pipecat runs shared/bench/pipecat_overhead.py in its own venv (created on first use).

    .venv/bin/python bench/overhead.py --callers 1,10,50,100,200 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from voxline.agent.config import AgentConfig
from voxline.agent.session import Session
from voxline.agent.stack import Stack, scripted_stack
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.models.store import disable_hubs
from voxline.transports.memory import MemoryTransport

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VOXLINE_SHARED", REPO.parent / "shared"))
FLOOR = 0.300 + 0.100 + 0.200 + 0.040 + 0.080
FRAME_S = 0.02


def speech_2s() -> AudioFrame:
    row = json.loads((SHARED / "data/speech/manifest.jsonl").read_text().splitlines()[0])
    audio = read_audio(SHARED / "data/speech" / row["file"]).to_mono().resample(16000)
    return audio.slice(0, 2.0)


def scenario_config() -> AgentConfig:
    return AgentConfig.load(turn={"detector": "silero", "silence_s": 0.3}, barge_in={"enabled": False})


class Caller:
    def __init__(self, stack: Stack, config: AgentConfig) -> None:
        self.transport = MemoryTransport(output_sample_rate=24000)
        self.session = Session(stack, config, self.transport)
        self.last_speech: float | None = None

    async def feed(self, speech: AudioFrame, offset: float, silent_s: float | None = None) -> None:
        await asyncio.sleep(offset)
        silence = AudioFrame.silence(FRAME_S, 16000)
        frames = [silence] * 25 + list(speech.chunks(FRAME_S)) if silent_s is None else \
            [silence] * round(silent_s / FRAME_S)
        t0 = time.monotonic()
        k = 0
        for k, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
            await self.transport.push(frame.with_timestamp(k * FRAME_S))
        if silent_s is None:
            self.last_speech = time.monotonic()
            for j in range(1, 251):  # up to 5 s of trailing silence, until the reply has been out for 0.5 s
                await asyncio.sleep(max(0.0, t0 + (k + j) * FRAME_S - time.monotonic()))
                await self.transport.push(silence.with_timestamp((k + j) * FRAME_S))
                first = self.transport.first_audio_at
                if first is not None and time.monotonic() - first > 0.5:
                    break
        self.transport.hangup()


async def run_voxline(n: int, speech: AudioFrame, stack: Stack, idle_s: float = 0.0) -> dict[str, float | int]:
    config = scenario_config()
    callers = [Caller(stack, config) for _ in range(n)]
    gc.collect()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for c in callers:
            tg.create_task(c.session.run())
            tg.create_task(c.feed(speech, random.random(), silent_s=idle_s or None))
    wall = time.monotonic() - t_start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    result: dict[str, float | int] = {"callers": n, "cpu_s_per_caller_min": round(cpu / n / (wall / 60), 3),
                                      "peak_rss_mb": round(ru1.ru_maxrss / 1024, 1)}
    if idle_s:
        result["idle_cpu_percent"] = round(100 * cpu / wall, 1)
        return result
    ov = sorted((c.transport.first_audio_at - c.last_speech - FLOOR) * 1000
                for c in callers if c.transport.first_audio_at and c.last_speech)
    result["replies"] = len(ov)
    if ov:
        p95 = ov[min(len(ov) - 1, round(0.95 * (len(ov) - 1)))]
        result.update(overhead_ms_p50=round(statistics.median(ov), 1), overhead_ms_p95=round(p95, 1),
                      overhead_ms_max=round(ov[-1], 1))
    return result


def pipecat_python() -> Path | None:
    """The Pipecat venv's python (created with uv on first use), or None if it cannot be made."""
    venv = REPO / ".bench-venvs" / "pipecat"
    py = venv / "bin" / "python"
    if py.exists():
        return py
    uv = Path(sys.executable).with_name("uv")
    try:
        subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([str(uv), "pip", "install", "-q", "--python", str(py), "pipecat-ai[silero]==1.14.0",
                        "soundfile", "soxr", "numpy"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"pipecat venv could not be made ({exc}); voxline figures only", file=sys.stderr)
        return None
    return py


def run_pipecat(n: int) -> dict[str, float | int] | None:
    py = pipecat_python()
    if py is None:
        return None
    out = subprocess.run([str(py), str(SHARED / "bench" / "pipecat_overhead.py"), "--callers", str(n)],
                         capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        print(f"pipecat run failed: {out.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def median_of(runs: list[dict[str, float | int]], key: str) -> tuple[float, float, float] | None:
    values = [float(r[key]) for r in runs if key in r]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(stat: tuple[float, float, float] | None) -> str:
    if stat is None:
        return "-"
    m, lo, hi = stat
    return f"{m:.1f} [{lo:.1f}-{hi:.1f}]" if hi > lo else f"{m:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--callers", default="1,10,50,100,200", help="comma-separated caller counts")
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (medians and ranges reported)")
    ap.add_argument("--no-pipecat", action="store_true", help="skip the Pipecat baseline")
    ap.add_argument("--pipecat-max", type=int, default=100, help="largest N to run Pipecat at (it collapses)")
    ap.add_argument("--idle", type=int, default=100, help="callers for the idle-cost measure (0 to skip)")
    ap.add_argument("--json", type=Path, help="write all raw results here")
    args = ap.parse_args()
    disable_hubs()
    random.seed(0)
    speech = speech_2s()
    stack = scripted_stack()
    rows: list[tuple[object, ...]] = []
    raw: dict[str, Any] = {"voxline": {}, "pipecat": {}}
    for n in [int(x) for x in args.callers.split(",")]:
        vox = [asyncio.run(run_voxline(n, speech, stack)) for _ in range(args.runs)]
        pc = [] if args.no_pipecat or n > args.pipecat_max else \
            [r for r in (run_pipecat(n) for _ in range(args.runs)) if r]
        raw["voxline"][n], raw["pipecat"][n] = vox, pc
        for r in vox:
            if r.get("replies") != n:
                print(f"warning: voxline got {r.get('replies')} replies from {n} callers", file=sys.stderr)
        row: tuple[object, ...] = (n, fmt(median_of(vox, "overhead_ms_p50")), fmt(median_of(vox, "overhead_ms_p95")),
               fmt(median_of(vox, "overhead_ms_max")), fmt(median_of(vox, "cpu_s_per_caller_min")),
               fmt(median_of(vox, "peak_rss_mb")), fmt(median_of(pc, "overhead_ms_p95")),
               fmt(median_of(pc, "peak_rss_mb")))
        vp, pp = median_of(vox, "overhead_ms_p95"), median_of(pc, "overhead_ms_p95")
        ratio = f"{pp[0] / vp[0]:.1f}x" if vp and pp and vp[0] > 0 else "-"
        rows.append((*row, ratio))
        print(json.dumps({"callers": n, "voxline": vox, "pipecat": pc}), flush=True)
    header = ("callers", "vox p50 ms", "vox p95 ms", "vox max ms", "vox CPU s/caller-min", "vox RSS MB",
              "pipecat p95 ms", "pipecat RSS MB", "p95 pipecat/vox")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    if args.idle:
        idle = asyncio.run(run_voxline(args.idle, speech, stack, idle_s=10.0))
        raw["idle"] = idle
        print(f"\nidle: {args.idle} silent callers -> {idle['idle_cpu_percent']} % CPU of one core "
              f"({idle['peak_rss_mb']} MB peak RSS)")
    good = [int(str(row[0])) for row in rows
            if (s := median_of(raw["voxline"][row[0]], "overhead_ms_p95")) and s[0] < 50]
    print(f"largest N with voxline p95 overhead < 50 ms: {max(good) if good else 'none'}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
