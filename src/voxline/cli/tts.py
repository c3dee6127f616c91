"""`voxline tts`: speak text into an audio file with the local Piper voice."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from voxline.audio.codecs import FORMATS, format_from_path, write_audio
from voxline.audio.frame import AudioFrame
from voxline.cli.common import reports_errors, stderr
from voxline.errors import VoxlineError

# Show a progress bar from this many pieces of text on (short replies finish before a bar is worth drawing).
PROGRESS_FROM_PIECES = 4


@dataclass(frozen=True, slots=True)
class SpeechResult:
    audio: AudioFrame
    first_audio_s: float
    synthesis_s: float
    load_s: float


def _speak(text: str, voice: str | None, rate: float, progress: bool) -> SpeechResult:
    from voxline.providers.piper import PiperTTS, split_for_speech

    started = time.perf_counter()
    # Whole pieces: a file plays nothing early, and the progress bar counts pieces, one frame each.
    tts = PiperTTS(length_scale=1.0 / rate, stream=False)
    load_s = time.perf_counter() - started
    total = sum(1 for _ in split_for_speech(text))

    async def run() -> SpeechResult:
        frames: list[AudioFrame] = []
        first: float | None = None
        begin = time.perf_counter()
        with Progress(TextColumn("speaking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=stderr, disable=not progress or total < PROGRESS_FROM_PIECES,
                      transient=True) as bar:
            task = bar.add_task("speaking", total=total)
            async for frame in tts.synthesize(text, voice=voice):
                if first is None:
                    first = time.perf_counter() - begin
                frames.append(frame)
                bar.advance(task)
        elapsed = time.perf_counter() - begin
        if not frames or first is None:
            raise VoxlineError("the text has nothing to say (only punctuation or symbols)")
        return SpeechResult(AudioFrame.concat(frames), first, elapsed, load_s)

    try:
        return asyncio.run(run())
    finally:
        tts.close()


@click.command("tts")
@click.argument("text")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Audio file to write.")
@click.option("--voice", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Another Piper voice (.onnx, with its .onnx.json next to it). Default: en_US joe.")
@click.option("--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False), default=None,
              help="Output format; default: taken from the output file's extension.")
@click.option("--rate", type=click.FloatRange(0.25, 4.0), default=1.0, show_default=True,
              help="Speaking rate: 1.25 is 25% faster, 0.8 slower.")
@click.option("--progress/--no-progress", default=True, help="Progress bar for long text (per sentence).")
@reports_errors
def tts(text: str, output: Path, voice: str | None, fmt: str | None, rate: float, progress: bool) -> None:
    """Speak TEXT (or `-` to read it from stdin) into an audio file, offline, with Piper.

    \b
    Examples:
      voxline tts "Hello there. How can I help?" -o hello.wav
      voxline tts "Your table is booked." -o reply.mp3 --rate 1.1
      cat chapter.txt | voxline tts - -o chapter.ogg
      voxline tts "Bonjour." -o b.wav --voice ~/voices/fr_FR-siwis-medium.onnx
    """
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("no text to speak: give it as an argument, or `-` and pipe it on stdin")
    fmt = fmt.lower() if fmt else format_from_path(output)  # an unknown extension fails before synthesis
    result = _speak(text, voice, rate, progress)
    write_audio(result.audio, output, fmt)
    audio_s = result.audio.duration
    click.echo(f"{output}: {audio_s:.2f} s of speech ({fmt}, {result.audio.sample_rate} Hz); "
               f"first audio after {result.first_audio_s * 1000:.0f} ms, "
               f"synthesized in {result.synthesis_s:.2f} s "
               f"(real-time factor {result.synthesis_s / audio_s:.3f}; voice load {result.load_s:.2f} s)")
