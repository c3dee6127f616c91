"""Where sentences and clauses end in text meant to be spoken: one set of rules for the streaming splitter of the
agent (`voxline.agent.sentences`) and the whole-text splitter of Piper, so both cut "Dr. Smith" and "3.14" alike."""

from __future__ import annotations

import re

# A period after one of these does not end a sentence ("Dr. Smith", "e.g. this").
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e a.m p.m approx dept est fig inc ltd no vol mt ft jan feb mar apr jun "
    "jul aug sep sept oct nov dec u.s u.k".split())
SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*)(\s+|$)")
"""Candidate sentence ends: group 1 the punctuation, group 2 the space after it ('' at the end of the text)."""
CLAUSE_END = re.compile(r"([,;:]|\s[-–—])(\s+)")


def ends_sentence(text: str, match: re.Match[str]) -> bool:
    """Whether a `SENTENCE_END` match in `text` really ends a sentence (not an abbreviation, initial or number)."""
    punct = match.group(1)
    if punct.startswith(".") and len(punct.rstrip("\"')]")) == 1:
        before = text[: match.start()].rsplit(None, 1)
        word = before[-1].lower().lstrip("\"'([") if before else ""
        if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
            return False  # "Dr. Smith", "J. R. R. Tolkien"
        if word.isdigit() and match.group(2) == "":
            return False  # "3." may continue as "3.14"
    return True
