"""The conversation as the LLM sees it, and the rule that keeps it honest after a barge-in.

When the user interrupts, the assistant message keeps only the words whose audio was actually played, so the model
never believes it said what the user did not hear.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from voxline.providers.base import Message


@dataclass
class Conversation:
    system_prompt: str
    max_history_turns: int = 10
    messages: list[Message] = field(default_factory=list)

    def for_llm(self) -> list[Message]:
        """System prompt + the last `max_history_turns` user turns and what followed them."""
        user_indexes = [i for i, m in enumerate(self.messages) if m.role == "user"]
        start = user_indexes[-self.max_history_turns] if len(user_indexes) > self.max_history_turns else 0
        return [Message("system", self.system_prompt), *self.messages[start:]]

    def for_llm_with_user(self, text: str) -> list[Message]:
        """What `for_llm()` will return once `text` is added as the user's turn (the conversation is unchanged)."""
        return replace(self, messages=[*self.messages, Message("user", text)]).for_llm()

    def add_user(self, text: str) -> None:
        self.messages.append(Message("user", text))

    def add_assistant(self, text: str) -> None:
        if text.strip():
            self.messages.append(Message("assistant", text.strip()))

    def last(self, role: str) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == role), None)


def words_heard(sentences: list[tuple[str, float, float]], played_until: float) -> str:
    """The text heard when playback stopped at `played_until` seconds into the reply's audio.

    `sentences` holds (text, audio_start, audio_end) per synthesized piece. Within a piece, word timing is estimated
    from character counts (speech rate is roughly proportional to letters); a word counts as heard once its
    midpoint has played.
    """
    heard: list[str] = []
    for text, start, end in sentences:
        if played_until >= end:
            heard.append(text)
            continue
        if played_until <= start:
            break
        words = text.split()
        total = sum(len(w) + 1 for w in words) or 1
        position, kept = start, []
        for word in words:
            span = (end - start) * (len(word) + 1) / total
            if played_until < position + span / 2:
                break
            kept.append(word)
            position += span
        if kept:
            heard.append(" ".join(kept))
        break
    return " ".join(heard)
