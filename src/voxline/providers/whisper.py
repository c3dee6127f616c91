"""Local speech to text with faster-whisper (CTranslate2) on Whisper base, int8, on the CPU.

Two decoding windows:

- ``padded``: faster-whisper as it ships. Every input is padded to Whisper's 30 s window, so the encoder costs
  the same (~670 ms on 2 laptop cores) for a 1 s "yes" as for a 29 s monologue.
- ``short``: the encoder sees only the audio there is plus `pad_s` seconds of digital silence (the log-mel floor
  Whisper saw after every utterance in training), and the decoder may emit at most ``~8 tokens per second`` of
  audio. Without that trailing silence and that bound the decoder loops on short clips ("in 1813, in 1813, in
  18"). A decode that still looks wrong (token budget exhausted, repetitive text, low confidence, new text placed
  in the padding) is redone in the padded window, so the short window never trades accuracy for speed silently.
  A transcript that the decoder merely begins again in the padding, after closing the segments of the audio, is
  cut there instead: the words of the audio are fine, and the redo would cost a second.
  Audio longer than 30 s - `pad_s` always uses the padded window (faster-whisper's seek loop).
  See docs/stt.md for the measured trade-off.

One `WhisperSTT` holds one model and is shared by every session of a process. Decodes run on worker threads that the
`WhisperSTT` owns (`num_workers`, 2 by default, each decode on `cpu_threads` threads, 1 by default). One decode
alone is faster on two threads (5-10 s clips: 378 ms median against 526 ms with one; `bench/stt.py --threads`), but
a live turn's final often overlaps an interim, and two two-thread decodes on 2 cores slow each other down: in
`bench/latency.py` the final was ready 34 ms after the turn decision (median) with two single-thread workers against
201 ms with two-thread ones. So sessions get two single-thread workers, and a final that finds no other decode
running or waiting gets a second copy of the model with `solo_threads` (2) threads, the other worker starting
nothing until it is done (`_Workers`); batch work that decodes one file at a time (`voxline stt`) uses
`cpu_threads=2, num_workers=1`. The workers take finals before interims, so a caller waiting for its end-of-turn
transcript never queues behind another caller's interim. A stream keeps at most one interim decode in flight and
always decodes its newest audio, so interim work cannot pile up when the machine is busy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import math
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np

from voxline.audio.frame import AudioFrame, Resampler
from voxline.errors import AudioError, ConfigError, ModelError, ModelNotFoundError, ProviderError
from voxline.models.store import ModelStore
from voxline.providers.base import Segment, Transcript, Word
from voxline.providers.native_threads import configure_openmp, limit_blas_threads

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger(__name__)

Window = Literal["short", "padded"]
SAMPLE_RATE = 16000
WINDOW_S = 30.0
FRAMES_PER_S = 100  # log-mel frames per second (hop 160 at 16 kHz)
FINAL, INTERIM = 0, 1  # worker priorities: lower runs first
_SILENT_PEAK = 8 / 32768  # below this peak the input is digital silence: nothing to decode
_PUNCTUATION = "\"'“¿([{-"
_APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
T = TypeVar("T")
M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class ShortWindowOptions:
    """How the short window decodes, and when it hands a clip back to the padded window.

    `tokens_per_s` and `min_tokens` bound the decode length by the audio duration (speech runs at 3-5 tokens per
    second plus timestamps); a decode that uses the whole budget is taken for a loop.
    """

    pad_s: float = 2.0
    tokens_per_s: float = 7.0
    min_tokens: int = 10
    compression_ratio_threshold: float = 2.0
    log_prob_threshold: float = -0.8  # -0.65 redid 4 more of 184 dev files, 3 to the same words (docs/stt.md)
    fallback: bool = True


@dataclass(frozen=True, slots=True)
class _Decoded:
    transcript: Transcript
    fell_back: bool = False


class _Workers(Generic[M]):
    """Decode threads fed from one priority queue: finals before interims, first come first served within each.

    Each job is called with the model to decode with. A final that finds no other decode running or waiting gets
    `solo`, the model with more threads per decode, and the other workers start nothing until it is done: one decode
    on both cores beats one on a single core with the other idle (5-10 s clips: 378 against 526 ms), while two decodes
    side by side on two-thread models slow each other down (docs/stt.md, "Concurrency"). Under load a final finds
    other decodes running or queued, and every decode keeps to one core: a burst of finals runs side by side, not one
    after the other.
    """

    def __init__(self, count: int, model: M, solo: M | None = None) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, concurrent.futures.Future[Any] | None,
                                               Callable[[M], Any] | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._model, self._solo = model, solo
        self._changed = threading.Condition()  # guards the counts below
        self._taken = 0  # jobs out of the queue and not yet answered
        self._solo_running = False
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"whisper-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    @property
    def active(self) -> int:
        """Decodes running or waiting right now."""
        with self._changed:
            return self._taken + sum(1 for _, _, f, _ in list(self._queue.queue) if f and not f.done())

    def submit(self, priority: int, fn: Callable[[M], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise ProviderError("this WhisperSTT has been closed", provider="whisper")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((priority, next(self._seq), future, fn))
        return future

    def _work(self) -> None:
        while True:
            with self._changed:  # leave the queue to the solo decode's worker meanwhile: its next job may be solo too
                self._changed.wait_for(lambda: not self._solo_running)
            priority, _, future, fn = self._queue.get()
            if future is None or fn is None:
                return
            with self._changed:
                self._taken += 1
                self._changed.wait_for(lambda: not self._solo_running)  # one went solo while this thread waited
                if not future.set_running_or_notify_cancel():  # its caller gave up while it waited
                    self._taken -= 1
                    continue
                solo = self._solo is not None and priority == FINAL and self._taken == 1 and self._queue.empty()
                self._solo_running = solo
            try:
                result = fn(self._solo if solo and self._solo is not None else self._model)
            except BaseException as exc:  # handed to the awaiting task
                self._done(solo)
                future.set_exception(exc)
            else:
                self._done(solo)  # before the result wakes its caller, so `active` never counts a decode answered
                future.set_result(result)

    def _done(self, solo: bool) -> None:
        with self._changed:
            self._taken -= 1
            if solo:
                self._solo_running = False
            self._changed.notify_all()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                _, _, future, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            if future is not None:
                future.cancel()
        for _ in self._threads:
            self._queue.put((-1, next(self._seq), None, None))


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WhisperSTT:
    """Whisper base (int8) on faster-whisper; `transcribe` for whole audio, `stream` for live turns.

    `window` picks the default decoding window ("short" or "padded", see the module docstring); `language` None
    detects the language per utterance. `beam_size` applies to finals (3: as accurate as 5 on the dev speech, ~8 %
    faster, docs/stt.md); interims are greedy. `commit_min_s`: see `WhisperStream` (None: every final decodes the
    whole turn, exactly as `transcribe`). `solo_threads`: threads of a final that has the cores to itself (see the
    module docstring; no second model when it is not above `cpu_threads` or when `num_workers` is 1).
    """

    name = "whisper"

    def __init__(self, model: str | Path | None = None, *, store: ModelStore | None = None, cpu_threads: int = 1,
                 num_workers: int = 2, solo_threads: int = 2, window: Window = "short", language: str | None = None,
                 beam_size: int = 3, short: ShortWindowOptions | None = None, interim_interval_s: float = 0.5,
                 min_interim_s: float = 0.6, commit_min_s: float | None = 8.0) -> None:
        configure_openmp()
        limit_blas_threads()  # the feature extraction's OpenBLAS helper would spin through the encoder
        _prefer_avx512()
        from faster_whisper import WhisperModel

        if cpu_threads < 1 or num_workers < 1 or solo_threads < 1:
            raise ConfigError("cpu_threads, num_workers and solo_threads must be at least 1, got "
                              f"{cpu_threads}, {num_workers}, {solo_threads}")
        if window not in ("short", "padded"):
            raise ConfigError(f"window must be 'short' or 'padded', got {window!r}")
        if beam_size < 1:
            raise ConfigError(f"beam_size must be at least 1, got {beam_size}")
        path = Path(model) if model is not None else (store or ModelStore()).path("whisper-base")
        if not (path / "model.bin").is_file():
            raise ModelNotFoundError(f"no CTranslate2 Whisper model in {path} (model.bin missing)")
        try:
            self._model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads,
                                       num_workers=num_workers, local_files_only=True)
            # A second copy of the model (~110 MB RSS) for finals that have the cores to themselves: see `_Workers`.
            solo = (WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=solo_threads,
                                 num_workers=1, local_files_only=True)
                    if solo_threads > cpu_threads and num_workers > 1 else None)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"cannot load Whisper model {path}: {exc}") from exc
        self.model_path = path
        self.window: Window = window
        self.language = language
        self.beam_size = beam_size
        self.short = short or ShortWindowOptions()
        self.interim_interval_s = interim_interval_s
        self.min_interim_s = min_interim_s
        self.commit_min_s = commit_min_s
        self._workers = _Workers(num_workers, self._model, solo)

    # ---- public API ------------------------------------------------------------------------------------------

    @property
    def active_decodes(self) -> int:
        """Decodes running or queued on the workers (0 once every caller is served or gone)."""
        return self._workers.active

    def close(self) -> None:
        """Stop the workers; queued decodes are cancelled, a running one finishes in the background."""
        self._workers.close()

    async def transcribe(self, audio: AudioFrame, language: str | None = None, *, words: bool = False,
                         window: Window | None = None) -> Transcript:
        """Final transcript of `audio` (any rate, any channel count), with timed segments (and words if asked)."""
        samples = _to_model_input(audio)
        return await self._run(FINAL, lambda model: self._decode_final(model, samples, language, words,
                                                                        window).transcript)

    def transcribe_sync(self, audio: AudioFrame, language: str | None = None, *, words: bool = False,
                        window: Window | None = None,
                        on_progress: Callable[[float], None] | None = None) -> Transcript:
        """`transcribe` for callers without an event loop (CLI, benchmarks): blocks until done.

        `on_progress(seconds_done)` is called from the worker thread as segments of long audio are decoded.
        """
        samples = _to_model_input(audio)
        future = self._workers.submit(FINAL, lambda model: self._decode_final(model, samples, language, words, window,
                                                                              on_progress))
        return future.result().transcript

    @property
    def languages(self) -> list[str]:
        """Language codes the model knows."""
        return list(self._model.supported_languages)

    def decode_details(self, audio: AudioFrame, language: str | None = None, *,
                       window: Window | None = None) -> tuple[Transcript, bool]:
        """Blocking transcribe that also says whether the short window handed the clip to the padded one."""
        samples = _to_model_input(audio)
        decoded = self._workers.submit(
            FINAL, lambda model: self._decode_final(model, samples, language, False, window)).result()
        return decoded.transcript, decoded.fell_back

    def stream(self, sample_rate: int = SAMPLE_RATE, language: str | None = None) -> WhisperStream:
        return WhisperStream(self, sample_rate, language if language is not None else self.language)

    async def _run(self, priority: int, fn: Callable[[WhisperModel], T]) -> T:
        # Cancelling the awaiting task cancels a decode still queued; a running one ends on its own, unread.
        return await asyncio.wrap_future(self._workers.submit(priority, fn))

    # ---- decoding (worker threads) -----------------------------------------------------------------------------

    def _decode_final(self, model: WhisperModel, samples: np.ndarray, language: str | None, words: bool,
                      window: Window | None,
                      on_progress: Callable[[float], None] | None = None,
                      abandoned: threading.Event | None = None) -> _Decoded:
        """`abandoned`: set once the result is no longer needed as a final (a speculation superseded, or whose speaker
        went on): a decode still queued then does nothing, and a running one, which cannot be interrupted, skips the
        padded redo, which would hold the worker for ~1 s more. Audio shorter than `commit_min_s`, whose words the
        next pause would not commit, also skips the decoder after the encoder (~70 % of a short-window decode)."""
        language = language if language is not None else self.language
        if language is not None and language not in self._model.supported_languages:
            raise ConfigError(f"unknown language code {language!r} (Whisper knows e.g. en, de, fr, es, ja)")
        window = window or self.window
        duration = len(samples) / SAMPLE_RATE
        committable = self.commit_min_s is not None and duration >= self.commit_min_s
        if (not samples.size or (abandoned is not None and abandoned.is_set())
                or float(np.abs(samples).max()) < _SILENT_PEAK):
            return _Decoded(Transcript("", is_final=True, language=language, duration=duration))
        if window == "short" and duration <= WINDOW_S - self.short.pad_s:
            decoded = self._decode_short(model, samples, language, words, self.beam_size, final=True,
                                         give_up=None if committable else abandoned)
            if decoded is not None:
                return _Decoded(decoded)
            if abandoned is not None and abandoned.is_set():
                return _Decoded(Transcript("", is_final=True, language=language, duration=duration))  # unread
            return _Decoded(self._decode_padded(model, samples, language, words), fell_back=True)
        return _Decoded(self._decode_padded(model, samples, language, words, on_progress))

    def _decode_padded(self, model: WhisperModel, samples: np.ndarray, language: str | None, words: bool,
                       on_progress: Callable[[float], None] | None = None) -> Transcript:
        try:
            segments, info = model.transcribe(samples, language=language, beam_size=self.beam_size,
                                              word_timestamps=words, vad_filter=False)
            found = []
            for s in segments:  # a lazy generator: each window is decoded as it is asked for
                found.append(_segment(s.text, s.start, s.end, s.words))
                if on_progress is not None:
                    on_progress(min(float(s.end), info.duration))
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"Whisper failed to decode {len(samples) / SAMPLE_RATE:.2f} s of audio: {exc}",
                                provider=self.name) from exc
        return _transcript([s for s in found if s.text], True, info.language, info.duration)

    def _decode_short(self, model: WhisperModel, samples: np.ndarray, language: str | None, words: bool,
                      beam_size: int, final: bool, give_up: threading.Event | None = None) -> Transcript | None:
        """One decode on the audio plus trailing silence; None when the result looks unreliable (see module doc), or
        when `give_up` was set by the time the encoder was done."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        opts = self.short
        duration = len(samples) / SAMPLE_RATE
        features = model.feature_extractor(samples)  # (n_mels, frames + 1)
        content_frames = features.shape[-1] - 1
        pad_frames = round(opts.pad_s * FRAMES_PER_S)
        pad_frames += (content_frames + pad_frames) % 2  # the encoder's stride-2 convolution wants an even count
        # Digital silence sits at the log-mel floor: 8 (log10 units) under the clip's peak, i.e. 2 after scaling.
        floor = np.full((features.shape[0], pad_frames), features[:, :content_frames].max() - 2.0, np.float32)
        window = np.ascontiguousarray(np.concatenate([features[:, :content_frames], floor], axis=1)[None])
        try:
            encoded = model.encode(window)
            if give_up is not None and give_up.is_set():
                return None
            if language is None:
                language = (model.model.detect_language(encoded)[0][0][0][2:-2] if model.model.is_multilingual
                            else "en")
            tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                  language=language)
            max_new = min(max(opts.min_tokens, math.ceil(opts.tokens_per_s * duration)), model.max_length // 2)
            prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
            options = TranscriptionOptions(
                beam_size=beam_size, best_of=1, patience=1.0, length_penalty=1.0, repetition_penalty=1.0,
                no_repeat_ngram_size=0, log_prob_threshold=None, no_speech_threshold=None,
                compression_ratio_threshold=None, condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
                temperatures=[0.0], initial_prompt=None, prefix=None, suppress_blank=True,
                suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
                without_timestamps=False, max_initial_timestamp=1.0, word_timestamps=words,
                prepend_punctuations=_PUNCTUATION, append_punctuations=_APPEND_PUNCTUATION, multilingual=False,
                # CTranslate2 lets a short prompt generate only max_length / 2 tokens (its issue #1856).
                max_new_tokens=2 * max_new - len(prompt), clip_timestamps="0", hallucination_silence_threshold=None,
                hotwords=None)
            result, avg_logprob, _, _ = model.generate_with_fallback(encoded, prompt, tokenizer, options)
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"Whisper failed to decode {duration:.2f} s of audio: {exc}",
                                provider=self.name) from exc
        tokens = [t for t in result.sequences_ids[0] if t != tokenizer.eot]
        if result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            return Transcript("", is_final=final, language=language, duration=duration)
        begin = tokenizer.timestamp_begin
        pieces = _split_by_timestamps(tokens, begin, duration)
        heard = [p for p in pieces if p[0] < duration]
        text = tokenizer.decode([t for _, _, toks in heard for t in toks]).strip()
        padding = tokenizer.decode([t for start, _, toks in pieces if start >= duration + 0.3 for t in toks]).strip()
        if final and opts.fallback and self._suspicious(len(tokens), max_new, text, padding, avg_logprob):
            return None
        pieces = heard
        segments: list[dict[str, Any]] = [dict(seek=0, start=s, end=e, tokens=toks) for s, e, toks in pieces]
        if words and segments:
            model.add_word_timestamps([segments], tokenizer, encoded, content_frames, _PUNCTUATION,
                                      _APPEND_PUNCTUATION, last_speech_timestamp=0.0)
        found = [_segment(tokenizer.decode([t for t in s["tokens"] if t < tokenizer.timestamp_begin]),
                          s["start"], min(s["end"], duration), s.get("words") if words else None) for s in segments]
        return _transcript([s for s in found if s.text], final, language, duration)

    def _suspicious(self, n_tokens: int, max_new: int, text: str, padding: str, avg_logprob: float) -> bool:
        """Whether a short decode must be redone in the padded window. `text`: the words of the segments that start
        inside the audio; `padding`: those of segments that start 0.3 s or more after it ended."""
        opts = self.short
        if padding and not _echoes(text, padding):
            return True  # words placed after the audio ended: misplaced real words, or invented ones
        if n_tokens >= max_new and not padding:
            return True  # never reached end-of-text inside the audio: a loop, or text cut short
        if _compression_ratio(text) > opts.compression_ratio_threshold or _repeats(text):
            return True
        return avg_logprob < opts.log_prob_threshold

    def _decode_interim(self, model: WhisperModel, samples: np.ndarray, language: str | None) -> Transcript:
        duration = len(samples) / SAMPLE_RATE
        if float(np.abs(samples).max(initial=0.0)) < _SILENT_PEAK:
            return Transcript("", is_final=False, language=language, duration=duration)
        if duration <= WINDOW_S - self.short.pad_s:
            decoded = self._decode_short(model, samples, language, False, 1, final=False)
            assert decoded is not None
            return decoded
        # A turn beyond one window: its last 30 s are enough for an interim.
        tail = samples[-int((WINDOW_S - self.short.pad_s) * SAMPLE_RATE):]
        decoded = self._decode_short(model, tail, language, False, 1, final=False)
        assert decoded is not None
        return decoded


_AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def _prefer_avx512(cpuinfo: Path = Path("/proc/cpuinfo")) -> None:
    """Let CTranslate2 run its own kernels (softmax, norms, quantization) on AVX-512 on AMD CPUs that have it.

    CTranslate2 picks AVX2 unless `CT2_FORCE_CPU_ISA` says otherwise ("AVX512 can only be enabled with the
    environment variable"). Measured on AMD EPYC (docs/stt.md); Intel chips are left to CTranslate2's choice, as
    older ones lower their clock under AVX-512. A user's setting wins; it must be set before the first model loads."""
    if "CT2_FORCE_CPU_ISA" in os.environ:
        return
    try:
        info = cpuinfo.read_text(errors="replace")
    except OSError:
        return  # not Linux: CTranslate2's own choice
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, re.M)
    flags = re.search(r"^flags\s*:(.*)$", info, re.M)
    if vendor and vendor.group(1) == "AuthenticAMD" and flags and _AVX512 <= set(flags.group(1).split()):
        os.environ["CT2_FORCE_CPU_ISA"] = "AVX512"


def _to_model_input(audio: AudioFrame) -> np.ndarray:
    if not isinstance(audio, AudioFrame):
        raise AudioError(f"expected an AudioFrame, got {type(audio).__name__}")
    return audio.to_mono().resample(SAMPLE_RATE).mono_float32()


def _split_by_timestamps(tokens: Sequence[int], timestamp_begin: int,
                         duration: float) -> list[tuple[float, float, list[int]]]:
    """(start, end, tokens) per segment from a timestamped token sequence; unclosed text ends at `duration`."""
    pieces: list[tuple[float, float, list[int]]] = []
    start: float | None = None
    current: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            t = (token - timestamp_begin) * 0.02
            if current:
                pieces.append((start if start is not None else 0.0, t, current))
                current, start = [], None
            else:
                start = t
        else:
            current.append(token)
    if current:
        pieces.append((start if start is not None else 0.0, max(duration, start or 0.0), current))
    return pieces


def _repeats(text: str, min_words: int = 2, times: int = 2) -> bool:
    """Whether some run of `min_words`+ words occurs `times` times in a row (the short window's loop symptom)."""
    words = re.findall(r"[\w']+", text.lower())
    for size in range(min_words, len(words) // times + 1):
        for i in range(len(words) - size * times + 1):
            chunk = words[i:i + size]
            if all(words[i + k * size:i + (k + 1) * size] == chunk for k in range(1, times)):
                return True
    return False


def _echoes(text: str, padding: str, run: int = 3) -> bool:
    """Whether `padding` starts by repeating words of `text`: the decoder finished the speech, closed its segment,
    then began the transcript again in the silence after it (the short window's loop, moved past the audio). Those
    words are dropped and the segments inside the audio kept; any other text in the padding may be real words
    placed late, and sends the clip to the padded window."""
    said, again = re.findall(r"[\w']+", text.lower()), re.findall(r"[\w']+", padding.lower())
    head = again[:run]
    if len(head) < min(run, len(said)) or not head:
        return False
    return any(said[i:i + len(head)] == head for i in range(len(said) - len(head) + 1))


def _segment(text: str, start: float, end: float, words: Any) -> Segment:
    found = tuple(Word(w["word"] if isinstance(w, dict) else w.word,
                       float(w["start"] if isinstance(w, dict) else w.start),
                       float(w["end"] if isinstance(w, dict) else w.end),
                       float(w["probability"] if isinstance(w, dict) else w.probability)) for w in words or ())
    return Segment(text.strip(), round(float(start), 3), round(float(end), 3), found)


def _transcript(segments: list[Segment], final: bool, language: str | None, duration: float) -> Transcript:
    return Transcript(" ".join(s.text for s in segments).strip(), is_final=final, segments=tuple(segments),
                      language=language, duration=duration)


def _after(prefix: Transcript | None, tail: Transcript, offset_s: float) -> Transcript:
    """`tail`, decoded from `offset_s` seconds into the turn, after the words already committed (`prefix`)."""
    if prefix is None:
        return tail
    shifted = tuple(Segment(s.text, round(s.start + offset_s, 3), round(s.end + offset_s, 3),
                            tuple(Word(w.text, w.start + offset_s, w.end + offset_s, w.probability) for w in s.words))
                    for s in tail.segments)
    return Transcript(f"{prefix.text} {tail.text}".strip(), is_final=tail.is_final,
                      segments=prefix.segments + shifted, language=tail.language or prefix.language,
                      duration=offset_s + tail.duration)


class WhisperStream:
    """One live turn: audio in, interim transcripts while it grows, a final one after `finalize()`.

    Interims re-decode the turn so far (greedy, short window) on a background task, at most one at a time, at least
    `interim_interval_s` of new audio apart, always on the newest audio. `finalize()` decodes the turn as
    `transcribe` would and starts a new turn for later frames.

    A long turn is not decoded whole at its end. `pause()` decodes the turn so far in the background (the final,
    should the turn end in this pause); when the speaker goes on instead, the words that decode found are
    committed, provided they cover at least `commit_min_s` of audio: the cut lies in the pause, where no word can
    straddle it. Later decodes (interims, speculations, the final) cover only the audio after the last commit and
    are appended to the committed words, so the final of a 15 s turn read in phrases costs the decode of what
    follows the first 8 s or more, not of 15 s. The price: each part is decoded without the context of the one before,
    and a part of a few seconds is misheard more often (on 69 dev files, agreement with the padded decode of the
    whole turn: 97.9 % without commits, 97.3 % at 8 s, 95.7 % at 3 s; docs/stt.md), hence the 8 s.
    """

    def __init__(self, stt: WhisperSTT, sample_rate: int, language: str | None) -> None:
        self._stt = stt
        self._rate = sample_rate
        self._language = language
        self._resampler: Resampler | None = None
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._decoded_samples = 0
        self._last_interim = ""
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._new_audio = asyncio.Event()
        self._interims: asyncio.Task[None] | None = None
        self._speculation: asyncio.Task[Transcript] | None = None
        self._abandoned = threading.Event()  # of the current speculation
        self._decoded_pause: tuple[int, int, Transcript] | None = None  # (from, to) samples and words of the last one
        self._committed: Transcript | None = None  # words before `_committed_samples`, final for this turn
        self._committed_samples = 0
        self._in_pause = False  # between pause() and resume(): no interims, the speculation has the words
        self._turn = 0  # finalize() starts the next one
        self._closed = False

    @property
    def buffered_s(self) -> float:
        return self._samples / SAMPLE_RATE

    async def send(self, frame: AudioFrame) -> None:
        """Add audio to the turn. (Speech after a `pause()` is followed by another `pause()` before the turn can end,
        which replaces the speculation; see `SpeculativeSTTStream`.)"""
        if self._closed:
            raise ProviderError("send() on a closed Whisper stream", provider="whisper")
        if not isinstance(frame, AudioFrame):
            raise AudioError(f"expected an AudioFrame, got {type(frame).__name__}")
        mono = frame.to_mono()
        if self._resampler is None or self._resampler.in_rate != mono.sample_rate:
            self._flush_resampler()
            self._resampler = Resampler(mono.sample_rate, SAMPLE_RATE)
        self._append(self._resampler.process(mono))
        if self._interims is None:
            self._interims = asyncio.create_task(self._interim_loop(), name="whisper-interims")

    def _append(self, frame: AudioFrame) -> None:
        if frame.num_frames:
            self._chunks.append(frame.mono_float32())
            self._samples += frame.num_frames
            self._new_audio.set()

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            empty = AudioFrame(np.zeros((0, 1), np.int16), self._resampler.in_rate)
            self._append(self._resampler.process(empty, last=True))
            self._resampler = None

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.float32)

    async def _interim_loop(self) -> None:
        """Interims re-decode the turn since the last commit, so a long one costs more. After each one the loop rests as
        long as it took (the worker is busy with interims at most half the time): the decode a turn end waits for
        (a final, or the speculation at a pause) then rarely queues behind an interim already running, which
        cannot be interrupted, and the CPU is left to the replies being generated meanwhile. No interim starts while
        a speculative final is being decoded (it would be the same words, later), nor in a pause until `resume()`:
        the speculation has the pause's words, and the CPU goes to the reply drafted on them."""
        stt = self._stt
        step = round(stt.interim_interval_s * SAMPLE_RATE)
        while True:
            await self._new_audio.wait()
            self._new_audio.clear()
            if (self._in_pause or self._samples - self._committed_samples < stt.min_interim_s * SAMPLE_RATE
                    or self._samples - self._decoded_samples < step):
                continue
            if self._speculation is not None and not self._speculation.done():
                await asyncio.wait([self._speculation])
            samples = self._audio()
            self._decoded_samples = len(samples)
            start, committed = self._committed_samples, self._committed
            started = time.perf_counter()
            try:
                tail = await stt._run(INTERIM, functools.partial(stt._decode_interim, samples=samples[start:],
                                                                      language=self._language))
            except ProviderError as exc:
                log.warning("interim decode failed: %s", exc)
                continue
            transcript = _after(committed, tail, start / SAMPLE_RATE)
            if transcript.text and transcript.text != self._last_interim:
                self._last_interim = transcript.text
                self._out.put_nowait(transcript)
            await asyncio.sleep(time.perf_counter() - started)
            self._new_audio.set()  # audio that came in meanwhile may already be due

    async def _stop_interims(self) -> None:
        task, self._interims = self._interims, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves, not just the interim task

    async def pause(self) -> None:
        """The speaker paused: decode the turn so far as its final, in the background, so that a turn ending in this
        pause has its final transcript at once (see `SpeculativeSTTStream`)."""
        if self._closed:
            return
        self._commit()
        self._cancel_speculation()
        self._in_pause = True
        samples = self._audio()
        self._abandoned = threading.Event()
        self._speculation = asyncio.create_task(self._speculate(samples, self._abandoned))

    async def resume(self) -> None:
        """The speaker went on after the last pause: interims follow the new words again, and the pause's decode is
        no longer a final. If it has not started yet it is skipped; if it runs, its words are still committed at the
        next pause, unless the short window handed the clip to the padded one (that redo is skipped) or the clip is
        shorter than `commit_min_s` (the decoder is skipped after the encoder: nothing to commit)."""
        self._in_pause = False
        self._abandoned.set()
        self._new_audio.set()

    def _commit(self) -> None:
        """A new pause: the speaker went on after the last one, so the words decoded up to it are final."""
        decoded, self._decoded_pause = self._decoded_pause, None
        limit = self._stt.commit_min_s
        if decoded is None or limit is None:
            return
        start, end, words = decoded
        if start == self._committed_samples and end - start >= limit * SAMPLE_RATE and words.text:
            self._committed = _after(self._committed, words, start / SAMPLE_RATE)
            self._committed_samples = end

    async def _speculate(self, samples: np.ndarray, abandoned: threading.Event) -> Transcript:
        start, committed, turn = self._committed_samples, self._committed, self._turn
        decode = functools.partial(self._stt._decode_final, samples=samples[start:], language=self._language,
                                   words=False, window=None, abandoned=abandoned)
        tail = (await self._stt._run(FINAL, decode)).transcript
        transcript = _after(committed, tail, start / SAMPLE_RATE)
        if turn != self._turn:  # a finalize() took it as its turn's final, or ended the turn without it
            return transcript
        self._decoded_pause = (start, len(samples), tail)
        if transcript.text:
            # Also an interim result: turn detectors reading the words get the best transcript of the pause at once
            # (even when an interim had the same words: the detector only trusts words set after the speech stopped).
            # Speculative only while the pause lasts: once the speaker went on, they are just the turn's words so far.
            self._last_interim = transcript.text
            self._out.put_nowait(replace(transcript, is_final=False, speculative=not abandoned.is_set()))
        return transcript

    def _cancel_speculation(self) -> None:
        if self._speculation is not None and not self._speculation.done():
            self._speculation.cancel()
            self._abandoned.set()
        self._speculation = None

    async def finalize(self) -> None:
        """Decode the turn so far and emit its final transcript; later frames start a new turn."""
        if self._closed:
            raise ProviderError("finalize() on a closed Whisper stream", provider="whisper")
        await self._stop_interims()
        self._flush_resampler()
        samples = self._audio()
        start, committed = self._committed_samples, self._committed
        self._chunks, self._samples, self._decoded_samples, self._last_interim = [], 0, 0, ""
        self._committed, self._committed_samples, self._decoded_pause = None, 0, None
        self._in_pause = False
        self._turn += 1
        speculation, self._speculation = self._speculation, None
        if speculation is not None and self._abandoned.is_set():  # the speaker went on after its pause: not the final
            speculation.cancel()
            speculation = None
        started = time.perf_counter()
        try:
            if speculation is not None:  # the turn ended in the pause it was started for: same speech
                transcript = await speculation
            else:
                decode = functools.partial(self._stt._decode_final, samples=samples[start:], language=self._language,
                                           words=False, window=None)
                tail = (await self._stt._run(FINAL, decode)).transcript
                transcript = _after(committed, tail, start / SAMPLE_RATE)
        except ProviderError as exc:
            self._out.put_nowait(exc)
            return
        log.debug("final of %.2f s decoded in %.0f ms", len(samples) / SAMPLE_RATE,
                  1000 * (time.perf_counter() - started))
        self._out.put_nowait(transcript)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_speculation()
        await self._stop_interims()
        self._chunks = []
        self._out.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Transcript]:
        try:
            while True:
                item = await self._out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self._interims is not None and not self._interims.done():
                self._interims.cancel()  # nobody reads the interims any more
