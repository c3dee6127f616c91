"""Speaker similarity with Resemblyzer's GE2E voice encoder (a 3-layer LSTM d-vector model, 256 dimensions).

The encoder's weights ship inside the `Resemblyzer` package (`resemblyzer/pretrained.pt`, 17 MB): nothing is
downloaded. It needs torch, so it lives in the optional `voices` extra. One `SpeakerEncoder` is loaded per process
by its owner and shared; `embed` is blocking (~0.1-1 s per utterance on 2 cores), `aembed` runs it in a thread.

The default threshold is the equal-error-rate point measured on the recorded dev set (`bench/voices.py`):
LibriSpeech test-other, 5 speakers x 10 utterances as targets, 125 other speakers as impostors.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ModelError

ENCODER_RATE = 16000
# Equal-error-rate threshold on the dev set (bench/voices.py: EER 1.2 % at 0.727 over 7,475 pairs).
DEFAULT_THRESHOLD = 0.73
# Less than this much speech (after Resemblyzer trims long silences) gives embeddings too noisy to compare.
MIN_SPEECH_S = 1.0

INSTALL_HINT = ("speaker similarity needs the optional 'voices' dependencies (torch, Resemblyzer): "
                "pip install 'voxline[voices]' (see docs/voices.md for a CPU-only torch)")


def load_audio(source: AudioFrame | str | Path) -> AudioFrame:
    """An `AudioFrame` from a frame or a file path (any format `read_audio` reads)."""
    return source if isinstance(source, AudioFrame) else read_audio(source)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (GE2E embeddings are already L2-normed; this does not assume it)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass(frozen=True, slots=True)
class Similarity:
    """Cosine similarity of two speakers' embeddings and the verdict at `threshold`."""

    score: float
    threshold: float

    @property
    def same_speaker(self) -> bool:
        return self.score >= self.threshold

    def describe(self) -> str:
        verdict = "same speaker" if self.same_speaker else "different speakers"
        return f"{self.score:.3f} {verdict} (threshold {self.threshold:.2f})"


class SpeakerEncoder:
    """GE2E speaker embeddings of speech; load once per process, share between callers (thread-safe)."""

    def __init__(self, *, threads: int | None = None) -> None:
        try:
            import torch
            with warnings.catch_warnings():  # resemblyzer imports a deprecated scipy.ndimage path
                warnings.simplefilter("ignore", DeprecationWarning)
                from resemblyzer import VoiceEncoder
        except ImportError as exc:
            raise ModelError(f"{INSTALL_HINT} ({exc})") from exc
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            self._encoder: Any = VoiceEncoder("cpu", verbose=False)
        except Exception as exc:  # resemblyzer raises a bare Exception for missing weights
            raise ModelError(f"cannot load the Resemblyzer voice encoder: {exc}") from exc
        self._lock = threading.Lock()

    def speech(self, audio: AudioFrame) -> np.ndarray:
        """The 16 kHz mono float samples the encoder sees: volume-normalised, long silences removed."""
        from resemblyzer import preprocess_wav

        wav = audio.to_mono().resample(ENCODER_RATE).mono_float32()
        if not np.all(np.isfinite(wav)):
            raise AudioError("audio has NaN or infinite samples")
        if not wav.size or float(np.sqrt(np.mean(np.square(wav)))) < 1e-5:
            return np.zeros(0, np.float32)  # digital silence: nothing to normalise (resemblyzer would divide by 0)
        out: np.ndarray = preprocess_wav(wav)
        return out

    def embed(self, source: AudioFrame | str | Path) -> np.ndarray:
        """The 256-dim L2-normed embedding of one utterance; `AudioError` when it holds too little speech."""
        audio = load_audio(source)
        wav = self.speech(audio)
        if wav.size < MIN_SPEECH_S * ENCODER_RATE:
            name = f" in {source}" if not isinstance(source, AudioFrame) else ""
            raise AudioError(f"too little speech{name} to recognise a speaker: {wav.size / ENCODER_RATE:.2f} s "
                             f"after removing silence (at least {MIN_SPEECH_S:.1f} s needed)")
        with self._lock:  # one torch forward at a time: on 2 cores parallel calls only contend
            emb = self._encoder.embed_utterance(wav)
        return np.asarray(emb, dtype=np.float32)

    async def aembed(self, source: AudioFrame | str | Path) -> np.ndarray:
        """`embed` in a worker thread, for callers on the event loop."""
        return await asyncio.to_thread(self.embed, source)

    def compare(self, a: AudioFrame | str | Path, b: AudioFrame | str | Path,
                threshold: float = DEFAULT_THRESHOLD) -> Similarity:
        """How alike the speakers of `a` and `b` sound to the encoder."""
        return Similarity(cosine(self.embed(a), self.embed(b)), threshold)


def equal_error_rate(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) of similarity scores: the point where false rejections of `same` pairs equal false
    acceptances of `different` pairs (averaged where the two rates cross between candidate thresholds)."""
    same, different = np.asarray(same, float), np.asarray(different, float)
    if not same.size or not different.size:
        raise ValueError("need both same-speaker and different-speaker scores")
    candidates = np.unique(np.concatenate([same, different]))
    frr = np.array([(same < t).mean() for t in candidates])
    far = np.array([(different >= t).mean() for t in candidates])
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(candidates[i])
