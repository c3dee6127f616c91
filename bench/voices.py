"""Voices benchmark: speaker-similarity EER on the recorded dev set, and WORLD voice matching before/after.

1. EER: GE2E embeddings of every `multi/` (5 speakers x 10) and `single/` (125 speakers x 1) utterance; same-
   speaker pairs are the pairs within a `multi/` speaker, different-speaker pairs every pair with at least one
   `multi/` file and another speaker (`single/` files act as impostors). Prints the EER and its threshold.
2. Matching: for each `multi/` speaker, a match is built from 3 reference files; the speaker's identity is the
   mean embedding of 3 other files; a test sentence spoken by plain Piper and by the matched voice is compared
   with it. Prints before, after and the change per speaker and on average, and the cost of the transform.

    .venv/bin/python bench/voices.py [--skip-eer] [--skip-matching] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.voices.similarity import SpeakerEncoder, cosine, equal_error_rate

SPEECH = Path("/work/shared/data/speech")
SENTENCES = ("I can book a table for two at seven tonight. Would you like me to send the confirmation to your phone?",
             "Your parcel left the warehouse this morning and should arrive on Thursday afternoon.")


def eer(encoder: SpeakerEncoder) -> dict[str, Any]:
    rows = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["file"].startswith(("multi/", "single/"))]
    started = time.perf_counter()
    emb = {r["file"]: (r["speaker"], encoder.embed(SPEECH / r["file"])) for r in rows}
    elapsed = time.perf_counter() - started
    same, different = [], []
    for (fa, (sa, ea)), (fb, (sb, eb)) in itertools.combinations(emb.items(), 2):
        if not (fa.startswith("multi/") or fb.startswith("multi/")):
            continue
        (same if sa == sb else different).append(cosine(ea, eb))
    rate, threshold = equal_error_rate(np.array(same), np.array(different))
    audio_s = sum(r["duration_s"] for r in rows)
    return {"files": len(rows), "same_pairs": len(same), "different_pairs": len(different), "eer": rate,
            "threshold": threshold, "same_min": min(same), "same_median": float(np.median(same)),
            "different_max": max(different), "different_median": float(np.median(different)),
            "embed_rtf": elapsed / audio_s}


async def matching(encoder: SpeakerEncoder) -> dict[str, Any]:
    from voxline.providers.piper import PiperTTS
    from voxline.voices.matching import match_profile, transform

    tts = PiperTTS()
    try:
        plain = [AudioFrame.concat([f async for f in tts.synthesize(s)]) for s in SENTENCES]
        plain_emb = [encoder.embed(p) for p in plain]
        rows = []
        cost, audio_s = 0.0, 0.0
        for speaker in sorted({p.name.split("-")[0] for p in (SPEECH / "multi").glob("*.flac")}):
            files = sorted((SPEECH / "multi").glob(f"{speaker}-*.flac"))
            target = np.mean([encoder.embed(f) for f in files[5:8]], axis=0)
            profile = await match_profile(tts, [read_audio(f) for f in files[:3]])
            before = float(np.mean([cosine(e, target) for e in plain_emb]))
            scores = []
            for p in plain:
                started = time.perf_counter()
                matched = transform(p, profile)
                cost += time.perf_counter() - started
                audio_s += p.duration
                scores.append(cosine(encoder.embed(matched), target))
            after = float(np.mean(scores))
            rows.append({"speaker": speaker, "f0_ratio": profile.f0_ratio, "warp": profile.warp,
                         "before": before, "after": after, "change": after - before})
    finally:
        tts.close()
    return {"speakers": rows, "mean_before": float(np.mean([r["before"] for r in rows])),
            "mean_after": float(np.mean([r["after"] for r in rows])),
            "mean_change": float(np.mean([r["change"] for r in rows])),
            "improved": sum(r["change"] > 0 for r in rows), "transform_rtf": cost / audio_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-eer", action="store_true")
    parser.add_argument("--skip-matching", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    encoder = SpeakerEncoder()
    out: dict[str, Any] = {}
    if not args.skip_eer:
        r = out["eer"] = eer(encoder)
        print(f"EER {r['eer']:.2%} at threshold {r['threshold']:.3f} over {r['same_pairs']} same-speaker and "
              f"{r['different_pairs']} different-speaker pairs ({r['files']} files); same min {r['same_min']:.3f} "
              f"median {r['same_median']:.3f}, different max {r['different_max']:.3f} median "
              f"{r['different_median']:.3f}; embedding RTF {r['embed_rtf']:.3f}")
    if not args.skip_matching:
        m = out["matching"] = asyncio.run(matching(encoder))
        print(f"{'speaker':8} {'F0 x':>6} {'warp':>6} {'before':>7} {'after':>7} {'change':>7}")
        for row in m["speakers"]:
            print(f"{row['speaker']:8} {row['f0_ratio']:6.2f} {row['warp']:6.3f} {row['before']:7.3f} "
                  f"{row['after']:7.3f} {row['change']:+7.3f}")
        print(f"mean: before {m['mean_before']:.3f}, after {m['mean_after']:.3f}, change {m['mean_change']:+.3f}; "
              f"improved {m['improved']}/{len(m['speakers'])}; WORLD transform RTF {m['transform_rtf']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
