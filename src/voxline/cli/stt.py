"""`voxline stt`: transcribe audio files with the local Whisper model, as text, JSON or subtitles."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from voxline.cli.common import reports_errors, stderr
from voxline.errors import VoxlineError
from voxline.providers.base import Transcript
from voxline.subtitles import to_srt, to_vtt

FORMATS = ("text", "json", "srt", "vtt")


@dataclass(frozen=True, slots=True)
class FileResult:
    file: str
    transcript: Transcript | None = None
    error: str | None = None

    def as_json(self, words: bool) -> dict[str, Any]:
        t = self.transcript
        if t is None:
            return {"file": self.file, "text": None, "duration_s": None, "segments": [], "error": self.error}
        segments = []
        for s in t.segments:
            item: dict[str, Any] = {"start": s.start, "end": s.end, "text": s.text}
            if words:
                item["words"] = [{"word": w.text.strip(), "start": w.start, "end": w.end,
                                  "probability": round(w.probability, 3)} for w in s.words]
            segments.append(item)
        return {"file": self.file, "text": t.text, "duration_s": round(t.duration, 3), "language": t.language,
                "segments": segments}


def _render(result: FileResult, fmt: str, words: bool) -> str:
    assert result.transcript is not None
    if fmt == "srt":
        return to_srt(result.transcript.segments)
    if fmt == "vtt":
        return to_vtt(result.transcript.segments)
    if fmt == "json":
        return json.dumps(result.as_json(words), ensure_ascii=False, indent=2) + "\n"
    return result.transcript.text + "\n"


@click.command("stt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Output: plain text, one JSON array, or SRT / WebVTT subtitles.")
@click.option("-l", "--language", default=None, help="Language code (en, de, ...); detected per file if omitted.")
@click.option("--window", type=click.Choice(["short", "padded"]), default=None,
              help="Whisper window: 'short' encodes only the audio there is (fast), 'padded' always 30 s. "
                   "Default: the provider's (short, with a padded fallback for doubtful decodes).")
@click.option("--words", is_flag=True, help="Add word timings to the JSON output.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one FILE-stem.<txt|json|srt|vtt> per input here instead of printing.")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
              help="CPU threads per decode (files are decoded one at a time).")
@click.option("--beam-size", type=click.IntRange(1, 16), default=5, show_default=True,
              help="Beam search width. 5 here, 3 in live sessions: a batch job has no turn waiting on it.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@reports_errors
def stt(files: tuple[Path, ...], fmt: str, language: str | None, window: str | None, words: bool,
        output_dir: Path | None, threads: int, beam_size: int, progress: bool) -> None:
    """Transcribe audio FILES (wav, flac, mp3, ogg, opus, m4a; any rate, any channels) with local Whisper.

    A file that cannot be read is reported on stderr and skipped; the others are still transcribed, and the
    exit status is 1 at the end.

    \b
    Examples:
      voxline stt hello.wav
      voxline stt a.wav b.flac --format json > transcripts.json
      voxline stt talk.mp3 --format srt > talk.srt
      voxline stt *.wav --format vtt -o subtitles/
      voxline stt interview.m4a --language de --window padded
    """
    from voxline.audio.codecs import audio_info, read_audio
    from voxline.providers.whisper import WhisperSTT

    if fmt in ("srt", "vtt") and len(files) > 1 and output_dir is None:
        raise click.UsageError(f"{fmt} subtitles of several files need --output-dir (one file per input)")
    model = WhisperSTT(cpu_threads=threads, num_workers=1, beam_size=beam_size)
    if window is not None:
        model.window = "short" if window == "short" else "padded"
    try:
        if language is not None and language not in model.languages:
            raise click.BadParameter(f"unknown language code {language!r}", param_hint="--language")
        durations = []
        for path in files:
            try:
                durations.append(max(audio_info(path).duration_s, 0.0))
            except (VoxlineError, OSError):
                durations.append(0.0)  # read_audio below reports it properly
        results: list[FileResult] = []
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=stderr, disable=not progress, transient=True) as bar:
            task = bar.add_task("transcribing", total=sum(durations) or len(files))
            done = 0.0
            for path, seconds in zip(files, durations, strict=True):
                bar.update(task, description=f"transcribing {path.name}")
                weight = seconds if sum(durations) else 1.0

                def advance(at: float, base: float = done, weight: float = weight, seconds: float = seconds) -> None:
                    bar.update(task, completed=base + (min(at / seconds, 1.0) * weight if seconds else 0.0))

                try:
                    transcript = model.transcribe_sync(read_audio(path), language, words=words, on_progress=advance)
                    results.append(FileResult(str(path), transcript))
                except (VoxlineError, OSError) as exc:
                    message = str(exc) if str(path) in str(exc) or path.name in str(exc) else f"{path}: {exc}"
                    bar.console.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
                    results.append(FileResult(str(path), error=message))
                done += weight
                bar.update(task, completed=done)
    finally:
        model.close()
    _emit(results, fmt, words, output_dir)
    if any(r.error for r in results):
        sys.exit(1)


def _emit(results: list[FileResult], fmt: str, words: bool, output_dir: Path | None) -> None:
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        suffix = {"text": ".txt"}.get(fmt, f".{fmt}")
        for r in results:
            if r.transcript is not None:
                out = output_dir / (Path(r.file).stem + suffix)
                out.write_text(_render(r, fmt, words), encoding="utf-8")
                stderr.print(f"wrote {out}", highlight=False)
        return
    if fmt == "json":
        click.echo(json.dumps([r.as_json(words) for r in results], ensure_ascii=False, indent=2))
        return
    ok = [r for r in results if r.transcript is not None]
    for r in ok:
        text = _render(r, fmt, words)
        click.echo(f"{r.file}: {text}" if fmt == "text" and len(results) > 1 else text, nl=False)
