"""voxline vs pydub on recorded speech: split_on_silence, normalize and export, wall time from the same run.

    .venv/bin/python bench/audio.py [--files 8] [--repeat 3]

pydub's mp3 export shells out to an ffmpeg binary, which this machine does not have (and voxline does not need):
the mp3 row times voxline alone, and the export comparison is wav against pydub's wav export (pure Python).
The silence detection of both is timed with the same parameters and checked to give the same ranges.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soundfile as sf

from voxline.audio.segment import Sound

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pydub import AudioSegment, effects
    from pydub import silence as pydub_silence

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"
SPLIT = {"min_silence_len": 300, "silence_thresh": -40, "keep_silence": 100, "seek_step": 1}


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    paths = sorted((SPEECH / "multi").glob("*.flac"))[: args.files]
    ours = [Sound.from_file(p) for p in paths]
    theirs = []
    for p in paths:
        data, rate = sf.read(p, dtype="int16")
        buf = io.BytesIO()
        sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
        buf.seek(0)
        theirs.append(AudioSegment.from_wav(buf))
    seconds = sum(s.duration_seconds for s in ours)
    for a, b in zip(ours, theirs, strict=True):  # same answer before timing
        assert a.detect_nonsilent(300, -40) == pydub_silence.detect_nonsilent(b, 300, -40)

    rows = [
        ("split_on_silence (seek 1 ms)", lambda: [s.split_on_silence(**SPLIT) for s in ours],
         lambda: [pydub_silence.split_on_silence(s, **SPLIT) for s in theirs]),
        ("split_on_silence (seek 10 ms)", lambda: [s.split_on_silence(**{**SPLIT, "seek_step": 10}) for s in ours],
         lambda: [pydub_silence.split_on_silence(s, **{**SPLIT, "seek_step": 10}) for s in theirs]),
        ("normalize", lambda: [s.normalize() for s in ours], lambda: [effects.normalize(s) for s in theirs]),
        ("wav export", lambda: [s.export(io.BytesIO(), format="wav") for s in ours],
         lambda: [s.export(io.BytesIO(), format="wav") for s in theirs]),
        ("mp3 export (voxline only)", lambda: [s.export(format="mp3", bitrate="64k") for s in ours], None),
    ]
    results = []
    for name, mine, other in rows:
        t_ours = best(mine, args.repeat)
        t_theirs = best(other, args.repeat) if other else None
        results.append({"op": name, "voxline_s": t_ours, "pydub_s": t_theirs,
                        "speedup": t_theirs / t_ours if t_theirs else None})
    if args.json:
        print(json.dumps({"files": len(paths), "audio_s": seconds, "results": results}, indent=2))
        return
    print(f"{len(paths)} files, {seconds:.1f} s of 16 kHz speech; best of {args.repeat}")
    print(f"{'operation':32} {'voxline':>10} {'pydub':>10} {'ratio':>8}")
    for r in results:
        pyd = f"{r['pydub_s'] * 1000:8.1f}ms" if r["pydub_s"] else f"{'n/a':>10}"
        ratio = f"{r['speedup']:7.1f}x" if r["speedup"] else f"{'-':>8}"
        print(f"{r['op']:32} {r['voxline_s'] * 1000:8.1f}ms {pyd} {ratio}")
    print("pydub's mp3 export needs an ffmpeg binary (not installed); voxline encodes mp3 in-process with PyAV.")


if __name__ == "__main__":
    main()
