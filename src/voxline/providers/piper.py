"""Local text to speech with Piper (VITS on onnxruntime), 22.05 kHz, fast enough for live replies on 2 cores.

Latency comes from the size of the first piece of audio, so the text is cut before synthesis: into sentences,
and the first sentence, when long, at a clause boundary (the first audio of a 25-word sentence then costs
~120 ms rather than ~300 ms). Pieces are also capped in length, which bounds memory on absurd input (VITS cost
grows with the length of one utterance) and bounds the work a cancelled synthesis leaves running: one piece.

The voice is loaded once by the `PiperTTS` its owner creates and shares between sessions; onnxruntime sessions
are safe to run from several threads, and synthesis runs on a small thread pool owned by the `PiperTTS`, never
on the event loop. At most one piece per `synthesize` call is in flight ahead of the consumer.

onnxruntime's worker threads sleep between operations rather than spin (unless `spin_wait`): on 2 cores shared
with the LLM, STT or other processes, spinning threads steal the cores the work needs (measured ~1.7x slower
synthesis on a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError, ModelError, ModelNotFoundError, ProviderError
from voxline.models.store import ModelStore
from voxline.text import CLAUSE_END, SENTENCE_END, ends_sentence

log = logging.getLogger(__name__)

DEFAULT_MODEL = "en_US-joe-medium.onnx"

_WHITESPACE = re.compile(r"\s+")
# Piper reads [[ ... ]] as raw phonemes; user text must not be able to inject them.
_PHONEME_BLOCK = re.compile(r"\[\[|\]\]")


@dataclass(frozen=True, slots=True)
class SpeechSplit:
    """How text is cut into pieces before synthesis.

    `first_clause_words`: cut the first sentence at a clause boundary once that many words precede it
    (0: never); `max_words` / `max_chars`: no piece is longer, cut at a clause, else between words, else
    inside a word.
    """

    first_clause_words: int = 8
    max_words: int = 40
    max_chars: int = 400


def _sentences(text: str) -> Iterator[str]:
    """Sentences of `text`, lazily (100 kB of text is never copied into a list of pieces)."""
    start = 0
    for m in SENTENCE_END.finditer(text):
        if not ends_sentence(text, m):
            continue
        piece = text[start:m.end()].strip()
        start = m.end()
        if piece:
            yield piece
    if rest := text[start:].strip():
        yield rest


def _cap(piece: str, split: SpeechSplit) -> Iterator[str]:
    """Cut a piece that is too long: at the last clause boundary within the limits, else between words."""
    while len(piece.split()) > split.max_words or len(piece) > split.max_chars:
        words = piece[: split.max_chars].split(" ")
        window = " ".join(words[: split.max_words])
        cuts = [m.end() for m in CLAUSE_END.finditer(window) if len(window[: m.end()].split()) >= 4]
        if cuts:
            cut = cuts[-1]
        elif len(words) > 1:
            cut = len(" ".join(words[: min(split.max_words, len(words) - 1)]))
        else:
            cut = split.max_chars
        head, piece = piece[:cut].strip(), piece[cut:].strip()
        if head:
            yield head
    if piece:
        yield piece


def split_for_speech(text: str, split: SpeechSplit = SpeechSplit()) -> Iterator[str]:
    """The pieces `PiperTTS` synthesizes one by one, lazily: sentences, the first cut early at a clause."""
    text = _WHITESPACE.sub(" ", _PHONEME_BLOCK.sub(" ", text)).strip()
    first = True
    for sentence in _sentences(text):
        if first and split.first_clause_words:
            for m in CLAUSE_END.finditer(sentence):
                if len(sentence[: m.start()].split()) >= split.first_clause_words:
                    yield from _cap(sentence[: m.end()].strip(), split)
                    sentence = sentence[m.end():].strip()
                    break
        first = False
        yield from _cap(sentence, split)


class _Voice:
    """One loaded Piper voice: its onnxruntime session and config."""

    def __init__(self, model: Path, threads: int, spin_wait: bool) -> None:
        import onnxruntime as ort
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        config_path = Path(f"{model}.json")
        if not model.is_file():
            raise ModelNotFoundError(f"Piper voice not found: {model}")
        if not config_path.is_file():
            raise ModelNotFoundError(f"Piper voice {model} has no config file {config_path.name} next to it")
        try:
            config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
            session = ort.InferenceSession(str(model), sess_options=options,
                                           providers=["CPUExecutionProvider"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot load Piper voice {model}: {exc}") from exc
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt models
            raise ModelError(f"cannot load Piper voice {model}: {exc}") from exc
        self.path = model
        self.voice = PiperVoice(session=session, config=config)
        self.sample_rate = int(config.sample_rate)

    def render(self, text: str, syn_config: Any) -> np.ndarray:
        """Float samples of one piece of text; empty when it has nothing to say (only punctuation)."""
        # espeak may split a piece into several "sentences" ("Dr." + "Smith ..."); say them as one utterance.
        phonemes: list[str] = []
        for sentence in self.voice.phonemize(text):
            if sentence:
                phonemes.extend([" "] if phonemes else [])
                phonemes.extend(sentence)
        if not phonemes:
            return np.zeros(0, np.float32)
        audio = np.asarray(self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(phonemes), syn_config))
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = audio / peak if peak > 1e-8 else np.zeros_like(audio)
        return np.clip(audio * syn_config.volume, -1.0, 1.0).astype(np.float32)


class PiperTTS:
    """Piper voice synthesis, shared by many sessions; `synthesize` yields one `AudioFrame` per piece of text.

    `length_scale` > 1 speaks slower (1 / speaking rate); `volume` multiplies the peak-normalised audio;
    `noise_scale` / `noise_w_scale` set the generator and phoneme-duration noise (None: the voice's own
    values); `threads` is onnxruntime's thread count per synthesis, `max_parallel` how many pieces run at once
    across all sessions; `spin_wait` lets onnxruntime's threads busy-wait (see the module docstring).
    """

    name = "piper"

    def __init__(self, model: str | Path | None = None, *, store: ModelStore | None = None,
                 length_scale: float = 1.0, volume: float = 1.0, noise_scale: float | None = None,
                 noise_w_scale: float | None = None, speaker_id: int | None = None, threads: int = 2,
                 max_parallel: int = 2, split: SpeechSplit | None = None, spin_wait: bool = False) -> None:
        from piper.config import SynthesisConfig

        if not length_scale > 0 or length_scale > 10:
            raise ConfigError(f"length_scale must be in (0, 10], got {length_scale}")
        if not 0 <= volume <= 10:
            raise ConfigError(f"volume must be in [0, 10], got {volume}")
        for label, value in (("noise_scale", noise_scale), ("noise_w_scale", noise_w_scale)):
            if value is not None and not 0 <= value <= 2:
                raise ConfigError(f"{label} must be in [0, 2], got {value}")
        if threads < 1 or max_parallel < 1:
            raise ConfigError("threads and max_parallel must be at least 1")
        self._threads = threads
        self._spin_wait = spin_wait
        self._split = split or SpeechSplit()
        self._syn_config = SynthesisConfig(speaker_id=speaker_id, length_scale=length_scale,
                                           noise_scale=noise_scale, noise_w_scale=noise_w_scale,
                                           volume=volume)
        path = Path(model) if model is not None else (store or ModelStore()).path("piper-joe") / DEFAULT_MODEL
        self._default = _Voice(path, threads, spin_wait)
        self.sample_rate = self._default.sample_rate
        self._voices: dict[Path, _Voice] = {path.resolve(): self._default}
        self._voices_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="piper")
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Pieces being synthesized right now, over all sessions (0 when idle)."""
        return self._busy

    def close(self) -> None:
        """Stop accepting work; pieces already running finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _voice(self, voice: str | None) -> _Voice:
        if not voice:
            return self._default
        path = Path(voice).expanduser().resolve()
        with self._voices_lock:
            if path not in self._voices:
                self._voices[path] = _Voice(path, self._threads, self._spin_wait)
            return self._voices[path]

    def _render(self, voice: _Voice, text: str) -> np.ndarray:
        with self._busy_lock:
            self._busy += 1
        try:
            return voice.render(text, self._syn_config)
        except Exception as exc:
            raise ProviderError(f"Piper failed on {text[:60]!r}: {exc}", provider=self.name) from exc
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _submit(self, voice: _Voice, text: str) -> asyncio.Future[np.ndarray]:
        try:
            future: Future[np.ndarray] = self._pool.submit(self._render, voice, text)
        except RuntimeError as exc:
            raise ProviderError("this PiperTTS has been closed", provider=self.name) from exc
        return asyncio.wrap_future(future)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncGenerator[AudioFrame, None]:
        """Frames of speech for `text`, the first as soon as its first piece is ready.

        While the consumer handles one frame the next piece is already being synthesized; cancelling the
        consumer stops the work after that piece (a piece not yet started is dropped).
        """
        if not isinstance(text, str):
            raise ProviderError(f"text to synthesize must be a string, got {type(text).__name__}",
                                provider=self.name)
        pieces = split_for_speech(text, self._split)
        piece = next(pieces, None)
        if piece is None:
            return
        loop = asyncio.get_running_loop()
        chosen = self._default if not voice else await loop.run_in_executor(self._pool, self._voice, voice)
        timestamp = 0.0
        pending: asyncio.Future[np.ndarray] | None = self._submit(chosen, piece)
        try:
            while pending is not None:
                audio = await pending
                following = next(pieces, None)
                pending = self._submit(chosen, following) if following is not None else None
                if not audio.size:
                    continue
                frame = AudioFrame.from_float(audio, chosen.sample_rate, timestamp).resample(self.sample_rate)
                timestamp += frame.duration
                yield frame
        finally:
            if pending is not None:
                pending.cancel()  # drops the piece if it has not started; a running one finishes in the pool
