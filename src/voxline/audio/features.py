"""Whisper's log-mel front end in numpy, for models built on a Whisper encoder (Smart Turn).

Same semantics as `transformers.WhisperFeatureExtractor` and faster-whisper's `FeatureExtractor`: 16 kHz
audio, periodic Hann window of 400 samples (n_fft), hop 160, centred frames with reflect padding, power
spectrum, Slaney mel filters (librosa, htk=False, norm="slaney"), log10 clamped at 1e-10 and to (max - 8),
then (x + 4) / 4. The last STFT frame is dropped, so `n` samples give `n // 160` frames. Written here so no
torch/transformers is needed at run time.
"""

from __future__ import annotations

import librosa
import numpy as np

from voxline.errors import AudioError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160


class WhisperFeatures:
    """Log-mel spectrogram as Whisper computes it; holds the mel filter bank, so build one and reuse it."""

    def __init__(self, n_mels: int = 80) -> None:
        if n_mels not in (80, 128):
            raise ValueError(f"Whisper uses 80 or 128 mel bins, got {n_mels}")
        self.n_mels = n_mels
        self.filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, htk=False,
                                           norm="slaney").astype(np.float32)
        self.window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """(n_mels, len(audio) // 160) float32 features of 1-D float 16 kHz samples."""
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1:
            raise AudioError(f"log-mel features need 1-D mono samples, got shape {x.shape}")
        if x.size <= N_FFT // 2:
            raise AudioError(f"need more than {N_FFT // 2} samples for log-mel features, got {x.size}")
        if not np.isfinite(x).all():
            raise AudioError("audio contains NaN or infinite samples")
        padded = np.pad(x, N_FFT // 2, mode="reflect")
        n_frames = 1 + (padded.size - N_FFT) // HOP_LENGTH
        frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:n_frames]
        spectrum = np.fft.rfft(frames * self.window, axis=-1)
        # Whisper drops the last frame
        power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)[:-1]
        mel = self.filters @ power.T
        log_spec = np.log10(np.maximum(mel, 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)


def last_seconds_padded(audio: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The last `seconds` of `audio`, zero-padded at the START to exactly that length (Smart Turn's input
    window)."""
    n = round(seconds * sample_rate)
    x = np.asarray(audio, dtype=np.float32)[-n:]
    if x.size < n:
        x = np.concatenate([np.zeros(n - x.size, np.float32), x])
    return x


def zero_mean_unit_var(audio: np.ndarray) -> np.ndarray:
    """`do_normalize=True` of Hugging Face feature extractors: (x - mean) / sqrt(var + 1e-7) over the whole
    window."""
    x = np.asarray(audio, dtype=np.float32)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
