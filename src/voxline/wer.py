"""Word error rate: the normalizer and edit distance that the STT tests and benchmarks share."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np


def words(text: str) -> list[str]:
    """Lower case, hyphens split, other punctuation dropped (numbers stay digits): LibriSpeech-style references
    and Whisper's punctuated output compare on equal terms."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " ")).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    row = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, row = row, row.copy()
        row[0] = i
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return int(row[-1])


def word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs: total edits / total reference words."""
    edits = total = 0
    for ref, hyp in pairs:
        r = words(ref)
        edits += edit_distance(r, words(hyp))
        total += len(r)
    return edits / total if total else 0.0
