"""The conversation as the LLM sees it, and the rule that keeps it honest after a barge-in.

When the user interrupts, the assistant messages keep only the words whose audio was actually played, so the model
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

    def add_assistant(self, text: str) -> Message | None:
        """Add the assistant's words (none: nothing is added); returns the message added."""
        if not text.strip():
            return None
        message = Message("assistant", text.strip())
        self.messages.append(message)
        return message

    def last(self, role: str) -> Message | None:
        return next((m for m in reversed(self.messages) if m.role == role), None)


@dataclass
class ReplyRecord:
    """The messages one reply adds to the conversation, cut to what the caller heard.

    A reply that calls tools adds one tool-call message per round, whose text is what the LLM said before the call
    (a preamble, spoken while the tools run), and ends with a closing message. The reply counts the pieces it
    queues for speech (`pieces`), and each round remembers that count, so a barge-in during the preamble cuts that
    message, not only the closing one.
    """

    conversation: Conversation
    pieces: int = 0
    """Pieces the reply has queued for speech so far."""
    rounds: list[tuple[int, Message]] = field(default_factory=list)
    closing: Message | None = None

    def tool_round(self, message: Message) -> None:
        """`message` asks for tool calls after the pieces queued so far."""
        self.rounds.append((self.pieces, message))
        self.conversation.messages.append(message)

    def close(self, heard: list[str]) -> None:
        """The reply ended; `heard`: the heard words of each piece, in order (see `heard_per_piece`)."""
        self.closing = self.conversation.add_assistant(self._cut(heard))

    def rewrite(self, heard: list[str]) -> None:
        """The caller reports having heard less than was recorded (a truncate after the reply ended): cut again,
        unless the conversation has gone on since (a user message after the reply's first one)."""
        own = [m for _, m in self.rounds] + ([self.closing] if self.closing is not None else [])
        if not own:
            return
        messages = self.conversation.messages
        start = next((i for i, m in enumerate(messages) if m is own[0]), None)
        if start is None or any(m.role == "user" for m in messages[start:]):
            return
        rest = self._cut(heard)
        if self.closing is not None:
            if rest:
                self.closing.content = rest
            else:
                del messages[next(i for i, m in enumerate(messages) if m is self.closing)]  # (not an equal one)
                self.closing = None

    def _cut(self, heard: list[str]) -> str:
        """Give each tool-call message the heard words of its own pieces; return those heard after the last one."""
        start = 0
        for end, message in self.rounds:
            message.content = join_heard(heard[start:end])
            start = end
        return join_heard(heard[start:])


def join_heard(pieces: list[str]) -> str:
    """The heard words of some pieces (`heard_per_piece`) as one text, single-spaced."""
    return " ".join(" ".join(pieces).split())


def heard_per_piece(pieces: list[tuple[str, float, float]], played_until: float) -> list[str]:
    """The heard text of each piece, in order, when playback stopped at `played_until` seconds into the reply's
    audio; the list ends with the piece that was playing then ("" if none of its words was heard).

    `pieces` holds (text, audio_start, audio_end) per synthesized piece. Within a piece, word timing is estimated
    from character counts (speech rate is roughly proportional to letters); a word counts as heard once its
    midpoint has played.
    """
    heard: list[str] = []
    for text, start, end in pieces:
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
        heard.append(" ".join(kept))
        break
    return heard
