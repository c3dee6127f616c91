"""`voxline voices`: the voice library (list/add/show/remove/preview), sample checks, speaker comparison, cloning."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from voxline.cli.common import reports_errors, stderr
from voxline.errors import ConfigError, VoxlineError

ENGINES = ("piper", "elevenlabs", "xtts", "matched")
PRESET_NAMES = ("ultra_fast", "fast", "standard", "high_quality")
PREVIEW_TEXT = "Hello! This is how I sound. How can I help you today?"
stdout = Console()


def _library(root: Path | None) -> Any:
    from voxline.voices.library import VoiceLibrary

    return VoiceLibrary(root)


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"labels are KEY=VALUE, got {pair!r}", param_hint="--label")
        out[key.strip()] = value.strip()
    return out


library_option = click.option("--library", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                              help="Library folder (default: $VOXLINE_VOICES_DIR or the XDG data dir).")


@click.group("voices")
def voices() -> None:
    """Named voices (Piper, ElevenLabs, XTTS, matched), sample checks, speaker similarity and cloning.

    \b
    Examples:
      voxline voices validate me-*.wav
      voxline voices clone ada me-*.wav --engine matched
      voxline voices preview ada -o ada.wav
      voxline voices compare a.wav b.wav
    """


@voices.command("list")
@library_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@reports_errors
def list_voices(root: Path | None, as_json: bool) -> None:
    """The voices in the library.

    \b
    Examples:
      voxline voices list
      voxline voices list --json --library ./voices
    """
    profiles = _library(root).list()
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
        return
    table = Table("name", "engine", "voice", "labels", "preset", "description")
    for p in profiles:
        table.add_row(p.name, p.engine, p.voice or "(default)", ", ".join(f"{k}={v}" for k, v in p.labels.items()),
                      p.preset, p.description)
    stdout.print(table if profiles else "no voices yet: voxline voices add / clone")


@voices.command("add")
@click.argument("name")
@click.option("--engine", type=click.Choice(ENGINES), required=True)
@click.option("--voice", default="", help="Voice id (elevenlabs), .onnx path (piper; empty: default voice), "
              "XTTS model folder.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE (accent, gender, age...), repeatable.")
@click.option("--description", default="")
@click.option("--sample", "samples", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Reference sample to keep with the voice, repeatable.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="standard", show_default=True)
@library_option
@reports_errors
def add(name: str, engine: str, voice: str, labels: tuple[str, ...], description: str, samples: tuple[str, ...],
        preset: str, root: Path | None) -> None:
    """Register an existing voice under NAME (use `clone` to make a new one from samples).

    \b
    Examples:
      voxline voices add joe --engine piper
      voxline voices add alan --engine piper --voice ~/voices/en_GB-alan-medium.onnx --label accent=british
      voxline voices add rachel --engine elevenlabs --voice 21m00Tcm4TlvDq8ikWAM --label gender=female
    """
    from voxline.voices.library import VoiceProfile

    if engine == "matched":
        raise ConfigError("matched voices are made from samples: voxline voices clone NAME FILES --engine matched")
    if engine == "piper" and voice:
        voice = str(Path(voice).expanduser().resolve())
        if not Path(voice).is_file():
            raise ConfigError(f"Piper model not found: {voice}")
    if engine in ("elevenlabs", "xtts") and not voice:
        raise ConfigError(f"--voice is required for {engine} (the voice id or the model folder)")
    profile = VoiceProfile(name=name, engine=engine, voice=voice, labels=_labels(labels),
                           description=description, preset=preset)
    _library(root).add(profile, samples)
    stderr.print(f"added voice {name!r} ({engine})")


@voices.command("show")
@click.argument("name")
@library_option
@reports_errors
def show(name: str, root: Path | None) -> None:
    """Everything stored about one voice, as JSON.

    \b
    Example:
      voxline voices show alan
    """
    click.echo(json.dumps(_library(root).get(name).model_dump(mode="json"), indent=2))


@voices.command("remove")
@click.argument("name")
@library_option
@click.option("--remote", is_flag=True, help="Also delete an ElevenLabs voice from the account.")
@reports_errors
def remove(name: str, root: Path | None, remote: bool) -> None:
    """Remove a voice (and its stored samples) from the library.

    \b
    Examples:
      voxline voices remove alan
      voxline voices remove rachel --remote
    """
    library = _library(root)
    profile = library.get(name)
    if remote and profile.engine == "elevenlabs":
        from voxline.voices.cloning import ElevenLabsVoices

        async def drop() -> None:
            async with ElevenLabsVoices() as client:
                await client.delete(profile.voice)

        asyncio.run(drop())
    library.remove(name)
    stderr.print(f"removed voice {name!r}")


def _play(path: Path) -> bool:
    for player in (["aplay", "-q"], ["paplay"], ["afplay"], ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"]):
        if shutil.which(player[0]):
            subprocess.run([*player, str(path)], check=False)
            return True
    return False


@voices.command("preview")
@click.argument("name")
@click.option("--text", default=PREVIEW_TEXT, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Audio file to write (default: NAME-preview.wav).")
@click.option("--play", is_flag=True, help="Also play it (aplay / paplay / afplay / ffplay).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None, help="Default: the voice's preset.")
@click.option("--xtts-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of your XTTS-v2 weights (xtts voices).")
@library_option
@reports_errors
def preview(name: str, text: str, output: Path | None, play: bool, preset: str | None, xtts_dir: Path | None,
            root: Path | None) -> None:
    """Speak a sentence with voice NAME into a file (and play it).

    \b
    Examples:
      voxline voices preview alan --play
      voxline voices preview ada -o ada.mp3 --text "Your table is booked." --preset fast
    """
    from voxline.audio.codecs import write_audio
    from voxline.audio.frame import AudioFrame
    from voxline.voices.speak import tts_for

    library = _library(root)
    profile = library.get(name)
    tts, voice = tts_for(profile, library, preset=preset, xtts_model_dir=xtts_dir)

    async def speak() -> AudioFrame:
        frames = [f async for f in tts.synthesize(text, voice=voice)]
        if not frames:
            raise VoxlineError("the text has nothing to say")
        return AudioFrame.concat(frames)

    audio = asyncio.run(speak())
    output = output or Path(f"{name}-preview.wav")
    write_audio(audio, output)
    stderr.print(f"wrote {output} ({audio.duration:.1f} s, {profile.engine})")
    if play and not _play(output):
        stderr.print("no audio player found (aplay, paplay, afplay or ffplay); the file is written")


def _report_table(report: Any) -> Table:
    table = Table("file", "dur s", "rate", "clip %", "silence %", "SNR dB", "speaker", title="samples")
    for f in report.files:
        if f.error:
            table.add_row(Path(f.path).name, "-", "-", "-", "-", "-", "-", style="red")
            continue
        speaker = "-" if f.speaker_score is None else f"{f.speaker_score:.2f}"
        table.add_row(Path(f.path).name, f"{f.duration_s:.1f}", str(f.sample_rate), f"{f.clipping * 100:.2f}",
                      f"{f.silence_ratio * 100:.0f}", f"{f.snr_db:.1f}", speaker)
    return table


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    stdout.print(_report_table(report))
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for c in report.checks:
        stdout.print(f"[{colour[c.status]}]{c.status:4}[/] {c.name}: {c.message}", highlight=False)
    verdict = {"ok": "[green]usable[/]", "warn": "[yellow]usable, with warnings[/]",
               "fail": "[red]refused[/]"}[report.status]
    stdout.print(f"{report.total_s:.1f} s in {len(report.files)} files: {verdict}")


@voices.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.option("--speaker-check/--no-speaker-check", default=True,
              help="Check that all files are one speaker (loads the speaker encoder).")
@reports_errors
def validate(files: tuple[str, ...], as_json: bool, speaker_check: bool) -> None:
    """Check reference samples before cloning: duration, rate, clipping, silence, SNR, one speaker.

    Exit status 1 when the set would be refused.

    \b
    Examples:
      voxline voices validate me-*.wav
      voxline voices validate take1.wav take2.flac --json --no-speaker-check
    """
    from voxline.voices.validation import validate_samples

    encoder = None
    if speaker_check:
        from voxline.voices.similarity import SpeakerEncoder

        encoder = SpeakerEncoder()
    report = validate_samples(list(files), encoder)
    _print_report(report, as_json)
    if not report.usable:
        raise click.exceptions.Exit(1)


@voices.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False))
@click.argument("b", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=float, default=None, help="Same-speaker threshold (default: the dev-set EER "
              "point, 0.73).")
@reports_errors
def compare(a: str, b: str, threshold: float | None) -> None:
    """Cosine similarity of the speakers of two recordings, then the verdict: `0.812 same speaker (...)`.

    \b
    Examples:
      voxline voices compare a.wav b.wav
      voxline voices compare me.wav ada-preview.wav --threshold 0.8
    """
    from voxline.voices.similarity import DEFAULT_THRESHOLD, SpeakerEncoder

    click.echo(SpeakerEncoder().compare(a, b, DEFAULT_THRESHOLD if threshold is None else threshold).describe())


@voices.command("clone")
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--engine", type=click.Choice(["elevenlabs", "matched"]), default="matched", show_default=True,
              help="elevenlabs: Instant Voice Cloning (needs ELEVENLABS_API_KEY); matched: local WORLD matching "
              "of a Piper voice.")
@click.option("--base-voice", type=click.Path(exists=True, dir_okay=False), default=None,
              help="matched: the Piper voice to transform (default: en_US joe).")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="standard", show_default=True)
@click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--description", default="")
@click.option("--speaker-check/--no-speaker-check", default=True)
@click.option("--remove-background-noise", is_flag=True, help="elevenlabs: let the vendor denoise the samples.")
@library_option
@reports_errors
def clone(name: str, files: tuple[str, ...], engine: str, base_voice: str | None, preset: str,
          labels: tuple[str, ...], description: str, speaker_check: bool, remove_background_noise: bool,
          root: Path | None) -> None:
    """Make voice NAME from reference FILES (validated first; a refused set uploads nothing).

    \b
    Examples:
      voxline voices clone ada me-*.wav
      voxline voices clone ada me-*.wav --preset high_quality --label accent=irish
      voxline voices clone ada-cloud me-*.wav --engine elevenlabs --remove-background-noise
    """
    from voxline.voices.cloning import ElevenLabsVoices, clone_elevenlabs, clone_matched
    from voxline.voices.validation import SampleSetError

    library = _library(root)
    encoder = None
    if speaker_check:
        from voxline.voices.similarity import SpeakerEncoder

        encoder = SpeakerEncoder()

    async def run() -> Any:
        if engine == "elevenlabs":
            async with ElevenLabsVoices() as client:
                return await clone_elevenlabs(library, name, list(files), voices=client, description=description,
                                              labels=_labels(labels), encoder=encoder,
                                              remove_background_noise=remove_background_noise)
        from voxline.providers.piper import PiperTTS
        from voxline.voices.presets import piper_kwargs

        piper = PiperTTS(**piper_kwargs(preset))
        try:
            return await clone_matched(library, name, list(files), tts=piper, base_voice=base_voice or "",
                                       preset=preset, encoder=encoder, description=description,
                                       labels=_labels(labels))
        finally:
            piper.close()

    try:
        profile, report = asyncio.run(run())
    except SampleSetError as exc:
        _print_report(exc.report, False)
        raise
    _print_report(report, False)
    detail = f"voice id {profile.voice}" if engine == "elevenlabs" else (
        f"F0 x{profile.matching['f0_ratio']:.2f}, formants x{profile.matching['warp']:.2f}")
    stderr.print(f"created voice {name!r} ({engine}, {detail})")
