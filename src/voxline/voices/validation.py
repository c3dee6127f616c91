"""Checks on reference samples before any cloning: is there enough clean speech, of one speaker?

Cloning services take whatever they are given and charge for it; a set with clipping, hum, long silences or a
second speaker gives a worse voice, and the failure shows only when the voice speaks. So the set is measured
first, each figure gets a verdict (ok / warn / fail) with a reason, and a set with any failure is refused.

Figures, per file and for the set:
- total duration: ElevenLabs' instant cloning wants 1-30 min in total; below ~10 s nothing usable comes out.
- sample rate: below 22.05 kHz the top of the spectrum (sibilants, breath) is missing.
- clipping: the share of samples at full scale.
- silence ratio: the share of 20 ms frames below -60 dBFS or 35 dB below the speech level.
- SNR estimate: the level of speech frames (95th percentile of frame energies) over the noise floor (10th
  percentile), in dB: a noise-floor estimate in the style of WADA/NIST "stnr", crude but robust without a VAD.
- one speaker: each file's median cosine similarity to the other files' GE2E embeddings (the median, so one
  intruder does not drag the others down); a file far from the others is another speaker (or a very different
  recording). With two speakers in equal parts every file fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from voxline.audio.codecs import read_audio
from voxline.errors import AudioError, VoxlineError

if TYPE_CHECKING:
    from voxline.voices.similarity import SpeakerEncoder

Status = Literal["ok", "warn", "fail"]
_RANK = {"ok": 0, "warn": 1, "fail": 2}
FRAME_S = 0.02


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where each figure turns to a warning or a refusal (defaults measured on LibriSpeech and synthetic faults)."""

    min_total_s: float = 10.0
    recommended_total_s: float = 60.0
    max_total_s: float = 30 * 60.0
    min_sample_rate: int = 22050
    clipping_warn: float = 0.001
    clipping_fail: float = 0.01
    silence_dbfs: float = -60.0
    silence_below_speech_db: float = 35.0
    silence_warn: float = 0.5
    silence_fail: float = 0.9
    snr_warn_db: float = 15.0
    snr_fail_db: float = 8.0
    # Median cosine to the other files: one speaker's files of the dev set are >= 0.77, other speakers <= 0.66.
    consistency: float = 0.72
    # Two files only: their one cosine; same-speaker pairs of the dev set go down to 0.70.
    pair_fail: float = 0.60


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(slots=True)
class FileStats:
    path: str
    duration_s: float = 0.0
    sample_rate: int = 0
    clipping: float = 0.0
    silence_ratio: float = 0.0
    snr_db: float = 0.0
    speaker_score: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str
    file: str | None = None


@dataclass(slots=True)
class ValidationReport:
    """The figures of a sample set and the verdicts on them; `usable` is False when any check failed."""

    files: list[FileStats]
    checks: list[Check] = field(default_factory=list)
    total_s: float = 0.0
    min_pair_similarity: float | None = None

    @property
    def status(self) -> Status:
        return max((c.status for c in self.checks), key=_RANK.__getitem__, default="ok")

    @property
    def usable(self) -> bool:
        return self.status != "fail"

    @property
    def reasons(self) -> list[str]:
        return [c.message for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "usable": self.usable, "total_s": round(self.total_s, 3),
                "min_pair_similarity": self.min_pair_similarity,
                "files": [asdict(f) for f in self.files], "checks": [asdict(c) for c in self.checks]}

    def raise_if_unusable(self) -> None:
        if not self.usable:
            raise SampleSetError(self)


class SampleSetError(VoxlineError):
    """A sample set refused for cloning; `report` holds every figure and reason."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__("samples refused for cloning: " + "; ".join(report.reasons))
        self.report = report


def frame_levels(samples: np.ndarray, rate: int) -> np.ndarray:
    """dBFS of consecutive 20 ms frames (digital silence reads -120 dB)."""
    n = max(1, int(rate * FRAME_S))
    usable = samples[: samples.size // n * n].reshape(-1, n) if samples.size >= n else samples.reshape(1, -1)
    power = np.mean(np.square(usable, dtype=np.float64), axis=1)
    return np.asarray(10 * np.log10(np.maximum(power, 1e-12)), dtype=np.float64)


def measure_file(path: str | Path, thresholds: Thresholds = Thresholds()) -> FileStats:
    """Duration, rate, clipping, silence and SNR of one file; `error` set when it cannot be read."""
    stats = FileStats(str(path))
    try:
        audio = read_audio(path)
    except (VoxlineError, OSError) as exc:
        stats.error = str(exc)
        return stats
    stats.duration_s, stats.sample_rate = audio.duration, audio.sample_rate
    raw = audio.samples.astype(np.int32)
    stats.clipping = float(np.mean(np.abs(raw) >= 32767)) if raw.size else 0.0
    mono = audio.mono_float32()
    if not mono.size:
        stats.error = "no audio in the file"
        return stats
    levels = frame_levels(mono, audio.sample_rate)
    floor = max(thresholds.silence_dbfs, float(np.percentile(levels, 95)) - thresholds.silence_below_speech_db)
    stats.silence_ratio = float(np.mean(levels < floor))
    audible = levels[levels > -100]  # digital silence is no noise floor
    if audible.size >= 10:
        stats.snr_db = float(np.percentile(audible, 95) - np.percentile(audible, 10))
    return stats


def _file_checks(f: FileStats, t: Thresholds) -> list[Check]:
    name = Path(f.path).name
    if f.error:
        return [Check("readable", "fail", f"{name}: cannot be read ({f.error})", f.path)]
    checks = []
    if f.sample_rate < t.min_sample_rate:
        checks.append(Check("sample_rate", "warn", f"{name}: {f.sample_rate} Hz is below {t.min_sample_rate} Hz; "
                            "the clone will lack high frequencies", f.path))
    if f.clipping >= t.clipping_warn:
        status: Status = "fail" if f.clipping >= t.clipping_fail else "warn"
        checks.append(Check("clipping", status, f"{name}: {f.clipping:.2%} of samples clipped "
                            f"(limit {t.clipping_warn:.1%}, refused from {t.clipping_fail:.0%})", f.path))
    if f.silence_ratio >= t.silence_warn:
        status = "fail" if f.silence_ratio >= t.silence_fail else "warn"
        checks.append(Check("silence", status, f"{name}: {f.silence_ratio:.0%} silence "
                            f"(trim it; refused from {t.silence_fail:.0%})", f.path))
    if f.silence_ratio < t.silence_fail and f.snr_db < t.snr_warn_db:
        status = "fail" if f.snr_db < t.snr_fail_db else "warn"
        checks.append(Check("snr", status, f"{name}: speech only {f.snr_db:.1f} dB above the noise floor "
                            f"(want {t.snr_warn_db:.0f} dB, refused below {t.snr_fail_db:.0f} dB)", f.path))
    return checks


def _speaker_checks(files: list[FileStats], embeddings: list[np.ndarray], t: Thresholds,
                    report: ValidationReport) -> None:
    sims = np.array([[float(np.dot(a, b)) for b in embeddings] for a in embeddings])
    n = len(embeddings)
    report.min_pair_similarity = round(float(min(sims[i, j] for i, j in itertools.combinations(range(n), 2))), 4)
    if n == 2:
        score = float(sims[0, 1])
        files[0].speaker_score = files[1].speaker_score = round(score, 4)
        if score < t.consistency:
            status: Status = "fail" if score < t.pair_fail else "warn"
            report.checks.append(Check("one_speaker", status, f"the two files sound like different speakers "
                                       f"(similarity {score:.2f}, same speaker from {t.consistency:.2f})"))
        return
    for i, f in enumerate(files):
        score = float(np.median(np.delete(sims[i], i)))
        f.speaker_score = round(score, 4)
        if score < t.consistency:
            report.checks.append(Check("one_speaker", "fail", f"{Path(f.path).name}: another speaker than the "
                                       f"rest (median similarity {score:.2f} < {t.consistency:.2f})", f.path))


def validate_samples(paths: Sequence[str | Path], encoder: SpeakerEncoder | None = None,
                     thresholds: Thresholds = Thresholds()) -> ValidationReport:
    """Measure a set of reference samples and judge it; the speaker check runs only with an `encoder`."""
    if not paths:
        raise AudioError("no samples given")
    t = thresholds
    files = [measure_file(p, t) for p in paths]
    report = ValidationReport(files)
    for f in files:
        report.checks.extend(_file_checks(f, t))
    report.total_s = sum(f.duration_s for f in files if not f.error)
    if report.total_s < t.min_total_s:
        report.checks.append(Check("duration", "fail", f"{report.total_s:.1f} s of audio in total; at least "
                                   f"{t.min_total_s:.0f} s needed ({t.recommended_total_s / 60:.0f} min or more "
                                   "recommended)"))
    elif report.total_s < t.recommended_total_s:
        report.checks.append(Check("duration", "warn", f"{report.total_s:.1f} s of audio in total; "
                                   f"{t.recommended_total_s / 60:.0f} min or more gives a closer clone"))
    elif report.total_s > t.max_total_s:
        report.checks.append(Check("duration", "warn", f"{report.total_s / 60:.1f} min of audio; instant cloning "
                                   f"uses at most {t.max_total_s / 60:.0f} min"))
    if encoder is not None:
        speech = [(f, p) for f, p in zip(files, paths, strict=True)
                  if not f.error and f.silence_ratio < t.silence_fail]
        embedded: list[tuple[FileStats, np.ndarray]] = []
        for f, p in speech:
            try:
                embedded.append((f, encoder.embed(p)))
            except AudioError as exc:
                report.checks.append(Check("one_speaker", "warn", f"{Path(f.path).name}: {exc}", f.path))
        if len(embedded) >= 2:
            _speaker_checks([f for f, _ in embedded], [e for _, e in embedded], t, report)
    return report
