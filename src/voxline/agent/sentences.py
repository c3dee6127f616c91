"""Cut a stream of LLM tokens into speakable pieces, so TTS can start before the LLM has finished.

A piece ends at a sentence end (. ! ? followed by space or end). The first piece of a reply, the one the caller waits
for, ends sooner: at a clause boundary (, ; : or a dash) once a few words have gathered, or before a conjunction or
a preposition ("and", "which", "of", ...) where a speaker could breathe, once a few more have. Waiting for the full
stop of a 20-word sentence costs the caller its generation and its synthesis (on 2 cores SmolLM2 writes ~30
tokens/s and Piper needs ~12 ms per word), more than a slightly less natural prosody at the cut does.
Abbreviations, initials, decimals and ellipses do not end sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from voxline.text import CLAUSE_END, SENTENCE_END, ends_sentence

BREATH = re.compile(r"\s(?=(?:and|but|or|so|because|which|while|although|whereas|unless|until|where|when"
                    r"|of|for|with|about|from|in|on|at|to)\s)")
"""The space before a conjunction or a preposition, which start a new clause or phrase: where a first piece with no
punctuation may be cut."""


@dataclass
class SentenceSplitter:
    """Incremental splitter: `push(token)` returns the pieces completed so far, `flush()` the remainder.

    `clause_min_words`: cut a sentence at a clause boundary once it has this many words; `breath_min_words`: cut it
    before a conjunction or a preposition once it has this many (0 disables either). Applied to the first piece of a
    reply only (`first_only`), where they buy latency, unless `first_only` is False.
    """

    clause_min_words: int = 4
    breath_min_words: int = 6
    first_only: bool = True
    _buffer: str = field(default="", init=False)
    _emitted: int = field(default=0, init=False)

    def push(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        while piece := self._next_piece():
            out.append(piece)
        return out

    def flush(self) -> list[str]:
        rest = self._buffer.strip()
        self._buffer = ""
        if rest:
            self._emitted += 1
            return [rest]
        return []

    def _next_piece(self) -> str | None:
        buf = self._buffer
        for m in SENTENCE_END.finditer(buf):
            if m.group(2) == "":
                break  # punctuation at the very end: wait for the next token to know (e.g. "3." + "14")
            if ends_sentence(buf, m):
                return self._cut(m.end())
        if self._emitted == 0 or not self.first_only:
            for pattern, min_words in ((CLAUSE_END, self.clause_min_words), (BREATH, self.breath_min_words)):
                if min_words:
                    for m in pattern.finditer(buf):
                        if len(buf[: m.start()].split()) >= min_words:
                            return self._cut(m.end())
        return None

    def _cut(self, end: int) -> str | None:
        piece, self._buffer = self._buffer[:end].strip(), self._buffer[end:]
        if not piece:
            return None
        self._emitted += 1
        return piece


def split_sentences(text: str, clause_min_words: int = 0) -> list[str]:
    """Split a whole text into sentences (the batch form of `SentenceSplitter`)."""
    splitter = SentenceSplitter(clause_min_words=clause_min_words, breath_min_words=0, first_only=False)
    return splitter.push(text + " ") + splitter.flush()
