"""Deterministic audio for the fakes: a tone whose length follows the text (TTS), and a word code the fake STT reads
back from audio (so tests can check that no audio was lost or repeated across a reconnect).

The word code: each word is a 0.4 s block holding a sine at 200 + 100·k Hz for the k-th word of `VOCABULARY`;
a quiet block is a pause. `encode_words(["one", "two"])` makes such audio; the fake Deepgram decodes it block by
block. Audio that is not coded this way (real speech) still decodes to some words, deterministically.
"""

from __future__ import annotations

import numpy as np

from voxline.audio.frame import AudioFrame

VOCABULARY = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
              "sixteen seventeen eighteen nineteen").split()
BLOCK_S = 0.4
SILENCE_RMS = 0.01


def encode_words(words: list[str | None], sample_rate: int = 16000) -> AudioFrame:
    """Audio for `words` (None: a 0.4 s pause), each word a 0.4 s coded tone."""
    n = round(BLOCK_S * sample_rate)
    t = np.arange(n) / sample_rate
    blocks = []
    for w in words:
        if w is None:
            blocks.append(np.zeros(n, np.float32))
        else:
            k = VOCABULARY.index(w)
            blocks.append((0.3 * np.sin(2 * np.pi * (200 + 100 * k) * t)).astype(np.float32))
    return AudioFrame.from_float(np.concatenate(blocks) if blocks else np.zeros(0, np.float32), sample_rate)


def decode_block(samples: np.ndarray, sample_rate: int) -> str | None:
    """The word a block of float samples codes, or None for a pause."""
    if samples.size == 0 or float(np.sqrt(np.mean(samples ** 2))) < SILENCE_RMS:
        return None
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freq = float(np.argmax(spectrum)) * sample_rate / samples.size
    k = round((freq - 200) / 100)
    return VOCABULARY[k % len(VOCABULARY)]


def tone(duration_s: float, sample_rate: int, freq: float = 220.0) -> AudioFrame:
    """A quiet sine with 10 ms fades: what the fake TTS 'says'."""
    n = max(1, round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    wave = 0.2 * np.sin(2 * np.pi * freq * t)
    fade = min(n // 2, round(0.01 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return AudioFrame.from_float(wave.astype(np.float32), sample_rate)
