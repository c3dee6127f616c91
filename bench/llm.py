"""Local LLM latency: time to first token (cold and warm) and decode speed of `LlamaLLM` on voice prompts.

`cold`: the first request to a freshly loaded model (nothing cached). `warm`: later requests sharing the
system prompt with the one before (llama.cpp reuses that prefix, as for consecutive turns of an agent), each
with a new user message: median and p90 over --runs rounds of all prompts. `follow-up`: the next turn of the
same conversation (system prompt and history cached). Decode speed = tokens after the first / time after it.
`spoken turns`: the transcripts of the recorded gold speech as user turns, first token without and with a
`prefill()` of all but their last 4 words (what a session does on the interims while the user speaks).

    .venv/bin/python bench/llm.py --runs 5 --json /tmp/llm.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from voxline.models.store import disable_hubs
from voxline.providers.base import Message
from voxline.providers.llama import LlamaLLM

SPEECH = Path(os.environ.get("VOXLINE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "speech"
SYSTEM = Message("system", "You are a friendly voice assistant on a phone line. Answer in one or two short "
                           "sentences, without lists or markdown.")
PROMPTS = [
    "What is the capital of France?",
    "Can you book a table for two at seven tonight?",
    "What's a good name for a black cat?",
    "How do I boil an egg?",
]


@dataclass
class Row:
    prompt: str
    input_tokens: int
    cold_first_ms: float
    warm_first_ms_median: float
    warm_first_ms_p90: float
    follow_up_first_ms: float
    output_tokens: int
    decode_tok_s: float


@dataclass
class Timing:
    first_s: float
    total_s: float
    input_tokens: int
    output_tokens: int
    text: str

    @property
    def decode_tok_s(self) -> float:
        after = self.total_s - self.first_s
        return (self.output_tokens - 1) / after if after > 0 and self.output_tokens > 1 else float("nan")


async def timed(llm: LlamaLLM, messages: list[Message], max_tokens: int) -> Timing:
    start = time.perf_counter()
    first: float | None = None
    text, usage_in, usage_out = "", 0, 0
    async for delta in llm.stream(messages, max_tokens=max_tokens, temperature=0.0):
        if delta.text and first is None:
            first = time.perf_counter() - start
        text += delta.text
        usage_in, usage_out = delta.input_tokens or usage_in, delta.output_tokens or usage_out
    total = time.perf_counter() - start
    return Timing(first if first is not None else total, total, usage_in, usage_out, text)


async def measure(runs: int, threads: int, max_tokens: int, spin: bool) -> list[Row]:
    colds = {}
    for prompt in PROMPTS:
        llm = LlamaLLM(n_threads=threads, spin_wait=spin)
        try:
            colds[prompt] = await timed(llm, [SYSTEM, Message("user", prompt)], max_tokens)
        finally:
            llm.close()
    llm = LlamaLLM(n_threads=threads, spin_wait=spin)
    try:
        await timed(llm, [SYSTEM, Message("user", "Hello.")], 4)  # the system prompt is now cached
        warm: dict[str, list[Timing]] = {p: [] for p in PROMPTS}
        for _ in range(runs):
            for prompt in PROMPTS:  # each request differs from the previous one after the system prompt
                warm[prompt].append(await timed(llm, [SYSTEM, Message("user", prompt)], max_tokens))
        follow: dict[str, Timing] = {}
        for prompt in PROMPTS:
            first = await timed(llm, [SYSTEM, Message("user", prompt)], max_tokens)
            conversation = [SYSTEM, Message("user", prompt), Message("assistant", first.text),
                            Message("user", "Thanks. Can you say that again more briefly?")]
            follow[prompt] = await timed(llm, conversation, max_tokens)
    finally:
        llm.close()
    rows = []
    for prompt in PROMPTS:
        firsts = [t.first_s * 1000 for t in warm[prompt]]
        rows.append(Row(prompt, warm[prompt][0].input_tokens, round(colds[prompt].first_s * 1000, 1),
                        round(statistics.median(firsts), 1), round(float(np.percentile(firsts, 90)), 1),
                        round(follow[prompt].first_s * 1000, 1), warm[prompt][0].output_tokens,
                        round(statistics.median(t.decode_tok_s for t in warm[prompt]), 1)))
    return rows


async def spoken_turns(threads: int, max_tokens: int, spin: bool) -> list[tuple[int, float, float]]:
    """(words, first token ms from the system prompt alone, first token ms after prefilling all but 4 words)."""
    manifest = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
    llm = LlamaLLM(n_threads=threads, spin_wait=spin)
    out = []
    try:
        for text in (m["text"].capitalize() + "." for m in manifest if m["text"]):
            await timed(llm, [SYSTEM, Message("user", "Hello.")], 4)  # the cache: the system prompt, then "Hello."
            full = await timed(llm, [SYSTEM, Message("user", text)], max_tokens)
            await timed(llm, [SYSTEM, Message("user", "Hello.")], 4)
            words = text.split()
            llm.prefill([SYSTEM, Message("user", " ".join(words[:-4]))])
            await asyncio.sleep(0.5)  # done by the time the speaker has said the last 4 words
            prefilled = await timed(llm, [SYSTEM, Message("user", text)], max_tokens)
            out.append((len(words), full.first_s * 1000, prefilled.first_s * 1000))
    finally:
        llm.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="warm rounds over all prompts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--spin", action="store_true", help="leave libgomp's own ~3 ms spin in place (spin_wait)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    disable_hubs()
    rows = asyncio.run(measure(args.runs, args.threads, args.max_tokens, args.spin))
    print(f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads{', spinning' if args.spin else ''}, "
          f"{args.runs} warm rounds; first token in ms")
    print(f"{'prompt':<48} {'in':>4} {'cold':>6} {'warm med':>8} {'p90':>6} {'follow':>6} {'out':>4} {'tok/s':>6}")
    for r in rows:
        print(f"{r.prompt:<48} {r.input_tokens:>4} {r.cold_first_ms:>6.0f} {r.warm_first_ms_median:>8.0f} "
              f"{r.warm_first_ms_p90:>6.0f} {r.follow_up_first_ms:>6.0f} {r.output_tokens:>4} "
              f"{r.decode_tok_s:>6.0f}")
    turns = asyncio.run(spoken_turns(args.threads, args.max_tokens, args.spin)) \
        if (SPEECH / "manifest.jsonl").is_file() else []
    if not turns:
        print(f"spoken turns: skipped, no transcripts in {SPEECH}")
    else:
        lengths = [t[0] for t in turns]
        print(f"spoken turns ({len(turns)} gold transcripts, {min(lengths)}-{max(lengths)} words): "
              f"first token median {statistics.median(t[1] for t in turns):.0f} ms, "
              f"{statistics.median(t[2] for t in turns):.0f} ms after a prefill of all but the last 4 words")
    for words, full, prefilled in turns:
        print(f"  {words:3d} words: {full:4.0f} ms, prefilled {prefilled:4.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "threads": args.threads, "max_tokens": args.max_tokens,
                                         "spin": args.spin, "rows": [asdict(r) for r in rows],
                                         "spoken_turns": [dict(words=w, first_ms=round(f, 1),
                                                               prefilled_first_ms=round(p, 1))
                                                          for w, f, p in turns]}, indent=2))


if __name__ == "__main__":
    main()
