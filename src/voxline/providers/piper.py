"""Local text to speech with Piper (VITS on onnxruntime), 22.05 kHz, fast enough for live replies on 2 cores.

Latency comes from the size of the first piece of audio, so the text is cut before synthesis: into sentences,
and the first sentence, when long, at a clause boundary (the first audio of a 25-word sentence then costs
~120 ms rather than ~300 ms). Pieces are also capped in length, which bounds memory on absurd input (VITS cost
grows with the length of one utterance).

The voice is loaded once by the `PiperTTS` its owner creates and shares between sessions; onnxruntime sessions
are safe to run from several threads, and synthesis runs on a small thread pool owned by the `PiperTTS`, never
on the event loop. At most one step per `synthesize` call is in flight ahead of the consumer.

Within a piece the audio streams: the voice's graph is cut where its vocoder (VITS's HiFi-GAN decoder, about half
the work) begins, the text-to-latent half runs once per piece, and the vocoder runs on short spans of the latent
frames with a margin of context on both sides, so the first 0.37 s of audio is out after the first half and one
small vocoder call (an 8-word sentence: 50 ms instead of 99 ms, same samples to within 1e-3; docs/tts.md). A stream
cannot know the loudest sample of its piece in advance, so each voice has one gain, measured at load, instead of
scaling every piece to full scale (which made pieces of one reply up to 8 dB apart in loudness).

onnxruntime's worker threads sleep between operations rather than spin (unless `spin_wait`): on 2 cores shared
with the LLM, STT or other processes, spinning threads steal the cores the work needs (measured ~1.7x slower
synthesis on a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxline.audio.frame import AudioFrame, Resampler
from voxline.errors import ConfigError, ModelError, ModelNotFoundError, ProviderError
from voxline.models.store import ModelStore
from voxline.text import CLAUSE_END, SENTENCE_END, ends_sentence

log = logging.getLogger(__name__)

DEFAULT_MODEL = "en_US-joe-medium.onnx"

# Where the vocoder begins in Piper's VITS exports; its one input is the latent frames (z times the mask).
_VOCODER_NODE = "/dec/conv_pre/Conv"
FIRST_SPAN_FRAMES = 32  # ~0.37 s of audio at 22.05 kHz (256 samples per latent frame): the first chunk out
SPAN_FRAMES = 128  # later chunks: larger, so the context margins cost little
CONTEXT_FRAMES = 12  # latent frames of context on each side of a span: the vocoder's output then matches to 1e-3
# Phrases whose median loudest sample sets a voice's gain: for joe, 4 phrases at 0.45-0.56; 84 syntheses of other
# sentences peaked at 0.32-0.80 (median 0.54), so at peak 0.65 the loudest stays within full scale.
_CALIBRATION = ("Hello, how can I help you today?", "The weather is sunny and warm.",
                "Please hold the line for a moment.", "Thank you for calling, goodbye.")
_CALIBRATED_PEAK = 0.65

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
    """One loaded Piper voice: its onnxruntime sessions (the graph cut before the vocoder, when it can be), its
    config, and its gain."""

    def __init__(self, model: Path, threads: int, spin_wait: bool, stream: bool = True) -> None:
        import onnxruntime as ort
        from piper.config import PiperConfig, SynthesisConfig
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
            def load(source: str | bytes) -> Any:
                return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])

            halves = _split_at_vocoder(model) if stream and config.num_speakers <= 1 else None
            session = load(str(model) if halves is None else halves[0])
            self._vocoder = None if halves is None else load(halves[1])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot load Piper voice {model}: {exc}") from exc
        except Exception as exc:  # onnxruntime and onnx raise their own exception types for corrupt models
            raise ModelError(f"cannot load Piper voice {model}: {exc}") from exc
        self.path = model
        # Phonemizes; its session is the text-to-latent half when the voice streams, so never call its synthesize().
        self.voice = PiperVoice(session=session, config=config)
        self.sample_rate = int(config.sample_rate)
        self._latent = self._vocoder.get_inputs()[0].name if self._vocoder is not None else ""
        self.gain = 1.0  # `stream` applies the gain, so the calibration hears the raw level
        self.gain = self._calibrate(SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))

    @property
    def streams(self) -> bool:
        """Whether the vocoder runs span by span (the graph could be cut before it)."""
        return self._vocoder is not None

    def _calibrate(self, still: Any) -> float:
        """The gain that brings the calibration phrases to a median peak of `_CALIBRATED_PEAK` (1.0 when the voice
        says none of them: a voice for another script, say)."""
        try:
            peaks = [float(np.max(np.abs(audio))) for phrase in _CALIBRATION
                     if (audio := np.concatenate([np.zeros(0, np.float32), *self.stream(phrase, still)])).size]
        except Exception as exc:  # the voice may still speak other text: keep its raw level, and say so
            log.warning("Piper voice %s: calibration failed (%s); its level stays as the model makes it",
                        self.path.name, exc)
            return 1.0
        if not peaks or max(peaks) < 1e-3:
            log.warning("Piper voice %s says none of the calibration phrases; its level stays as the model makes it",
                        self.path.name)
            return 1.0
        return _CALIBRATED_PEAK / float(np.median(peaks))

    def stream(self, text: str, syn_config: Any) -> Iterator[np.ndarray]:
        """Float samples of one piece of text, chunk by chunk (one chunk when the voice does not stream); nothing
        when it has nothing to say (only punctuation). Lazy: each `next()` does one step of the work."""
        # espeak may split a piece into several "sentences" ("Dr." + "Smith ..."); say them as one utterance.
        phonemes: list[str] = []
        for sentence in self.voice.phonemize(text):
            if sentence:
                phonemes.extend([" "] if phonemes else [])
                phonemes.extend(sentence)
        if not phonemes:
            return
        volume = self.gain * syn_config.volume
        if self._vocoder is None:
            audio = np.asarray(self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(phonemes), syn_config))
            yield np.clip(audio.reshape(-1) * volume, -1.0, 1.0).astype(np.float32)
            return
        latent = self.voice.session.run(None, self._inputs(self.voice.phonemes_to_ids(phonemes), syn_config))[0]
        frames = latent.shape[-1]
        start, span = 0, FIRST_SPAN_FRAMES
        while start < frames:
            end = min(frames, start + span)
            if frames - end < CONTEXT_FRAMES:  # a sliver left over: render it with this span, not in a call of its own
                end = frames
            lo, hi = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
            audio = self._vocoder.run(None, {self._latent: np.ascontiguousarray(latent[..., lo:hi])})[0].reshape(-1)
            hop = len(audio) // (hi - lo)  # samples per latent frame (256 for Piper's voices)
            yield np.clip(audio[(start - lo) * hop:(end - lo) * hop] * volume, -1.0, 1.0).astype(np.float32)
            start, span = end, SPAN_FRAMES

    def _inputs(self, phoneme_ids: list[int], syn_config: Any) -> dict[str, np.ndarray]:
        """The graph's inputs, as `PiperVoice.phoneme_ids_to_audio` builds them for a single-speaker voice."""
        c = self.voice.config

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        return {"input": np.array([phoneme_ids], np.int64), "input_lengths": np.array([len(phoneme_ids)], np.int64),
                "scales": np.array([pick(syn_config.noise_scale, c.noise_scale),
                                    pick(syn_config.length_scale, c.length_scale),
                                    pick(syn_config.noise_w_scale, c.noise_w_scale)], np.float32)}


def _split_at_vocoder(model: Path) -> tuple[bytes, bytes] | None:
    """The voice's graph as two serialized models, text to latent frames and latent frames to audio; None when the
    graph has no vocoder node where Piper's exports put it, or cannot be cut there (such a voice synthesizes whole
    pieces). A model that cannot be read at all raises, as loading it whole would."""
    import onnx
    from onnx.utils import Extractor

    graph_model = onnx.load(str(model))
    graph = graph_model.graph
    vocoder = next((node for node in graph.node if node.name == _VOCODER_NODE), None)
    inputs = [i.name for i in graph.input]
    if vocoder is None or inputs != ["input", "input_lengths", "scales"] or len(graph.output) != 1:
        return None
    latent = vocoder.input[0]
    try:
        extractor = Extractor(graph_model)
        head = extractor.extract_model(inputs, [latent])
        tail = extractor.extract_model([latent], [graph.output[0].name])
    except Exception as exc:  # an export without the shape of the latent frames, say
        log.info("Piper voice %s cannot be cut before its vocoder (%s); it synthesizes whole pieces", model.name, exc)
        return None
    known = {latent, *(t.name for t in tail.graph.initializer), *(o for n in tail.graph.node for o in n.output)}
    if any(name and name not in known for n in tail.graph.node for name in n.input):
        return None  # the vocoder needs more than the latent frames (a speaker embedding, say)
    return head.SerializeToString(), tail.SerializeToString()


class PiperTTS:
    """Piper voice synthesis, shared by many sessions; `synthesize` yields `AudioFrame`s, a few per piece of text.

    `length_scale` > 1 speaks slower (1 / speaking rate); `volume` multiplies the voice's calibrated level;
    `noise_scale` / `noise_w_scale` set the generator and phoneme-duration noise (None: the voice's own
    values); `threads` is onnxruntime's thread count per synthesis, `max_parallel` how many steps run at once
    across all sessions; `spin_wait` lets onnxruntime's threads busy-wait; `stream` False synthesizes each piece
    whole, in one frame (see the module docstring).
    """

    name = "piper"

    def __init__(self, model: str | Path | None = None, *, store: ModelStore | None = None,
                 length_scale: float = 1.0, volume: float = 1.0, noise_scale: float | None = None,
                 noise_w_scale: float | None = None, speaker_id: int | None = None, threads: int = 2,
                 max_parallel: int = 2, split: SpeechSplit | None = None, spin_wait: bool = False,
                 stream: bool = True) -> None:
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
        self._stream = stream
        self._split = split or SpeechSplit()
        self._syn_config = SynthesisConfig(speaker_id=speaker_id, length_scale=length_scale,
                                           noise_scale=noise_scale, noise_w_scale=noise_w_scale,
                                           volume=volume)
        path = Path(model) if model is not None else (store or ModelStore()).path("piper-joe") / DEFAULT_MODEL
        self._default = _Voice(path, threads, spin_wait, stream)
        self.sample_rate = self._default.sample_rate
        # For cache keys (`CachedTTS`): the voice file, and that its level is the calibrated one, not the peak-scaled
        # pieces cached before.
        self.model = f"{path.name}@calibrated"
        self._voices: dict[Path, _Voice] = {path.resolve(): self._default}
        self._voices_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="piper")
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def synthesis(self) -> dict[str, Any]:
        """Speaker, length, noise and volume settings: with `model`, what shapes the audio besides text and voice
        (the TTS cache keys on both)."""
        return asdict(self._syn_config)

    @property
    def busy(self) -> int:
        """Synthesis steps running right now, over all sessions (0 when idle, and between the steps of a stream)."""
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
                self._voices[path] = _Voice(path, self._threads, self._spin_wait, self._stream)
            return self._voices[path]

    def _chunks(self, voice: _Voice, pieces: Iterator[str]) -> Iterator[np.ndarray]:
        for piece in pieces:
            try:
                yield from voice.stream(piece, self._syn_config)
            except Exception as exc:
                raise ProviderError(f"Piper failed on {piece[:60]!r}: {exc}", provider=self.name) from exc

    def _step(self, chunks: Iterator[np.ndarray]) -> np.ndarray | None:
        with self._busy_lock:
            self._busy += 1
        try:
            return next(chunks, None)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _submit(self, chunks: Iterator[np.ndarray]) -> asyncio.Future[np.ndarray | None]:
        try:
            future: Future[np.ndarray | None] = self._pool.submit(self._step, chunks)
        except RuntimeError as exc:
            raise ProviderError("this PiperTTS has been closed", provider=self.name) from exc
        return asyncio.wrap_future(future)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncGenerator[AudioFrame, None]:
        """Frames of speech for `text`, the first as soon as the first chunk of its first piece is ready.

        While the consumer handles one frame the next chunk is already being synthesized; cancelling the
        consumer stops the work after that chunk (one not yet started is dropped).
        """
        if not isinstance(text, str):
            raise ProviderError(f"text to synthesize must be a string, got {type(text).__name__}",
                                provider=self.name)
        pieces = split_for_speech(text, self._split)
        first = next(pieces, None)
        if first is None:
            return
        loop = asyncio.get_running_loop()
        chosen = self._default if not voice else await loop.run_in_executor(self._pool, self._voice, voice)
        chunks = self._chunks(chosen, itertools.chain([first], pieces))
        resampler = Resampler(chosen.sample_rate, self.sample_rate)  # one filter state over the chunks' seams
        timestamp = 0.0
        pending: asyncio.Future[np.ndarray | None] | None = self._submit(chunks)
        try:
            while pending is not None:
                audio = await pending
                pending = self._submit(chunks) if audio is not None else None
                samples = audio if audio is not None else np.zeros(0, np.float32)  # None: flush the resampler
                frame = resampler.process(AudioFrame.from_float(samples, chosen.sample_rate), last=audio is None)
                if not frame.num_frames:
                    continue
                yield frame.with_timestamp(timestamp)
                timestamp += frame.duration
        finally:
            if pending is not None:
                pending.cancel()  # drops the chunk if it has not started; a running one finishes in the pool
