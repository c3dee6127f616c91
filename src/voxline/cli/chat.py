"""`voxline chat`: one offline turn from a recorded question to a recorded reply, with its timeline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.table import Table

from voxline.cli.common import reports_errors, stderr


@click.command()
@click.option("--in", "in_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The user's question (any audio file).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the agent's spoken reply (format from the extension).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Agent config (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript, reply and timeline as JSON.")
@reports_errors
def chat(in_path: Path, out_path: Path, config_path: Path | None, as_json: bool) -> None:
    """Answer one spoken question offline and print the turn's latency timeline.

    \b
    Example:
      voxline chat --in question.wav --out reply.wav
    """
    from voxline.agent.config import AgentConfig
    from voxline.agent.session import Session
    from voxline.agent.stack import build_stack
    from voxline.audio.codecs import read_audio, write_audio
    from voxline.transports.file import FileTransport

    config = AgentConfig.load(config_path)
    # One question, one answer: a configured greeting would be taken for the reply (and its timeline for the turn's).
    config = config.model_copy(update={"agent": config.agent.model_copy(update={"greeting": ""})})
    stack = build_stack(config)
    transport = FileTransport(read_audio(in_path), output_sample_rate=config.output.sample_rate)
    asyncio.run(Session(stack, config, transport).run())

    events = transport.events
    user = next((e["text"] for e in events if e.get("type") == "transcript" and e.get("final")), "")
    reply = next((e["text"] for e in events if e.get("type") == "agent_done"), "")
    timeline = next((e for e in events if e.get("type") == "timeline"), None)
    audio = transport.reply_audio()
    if audio.num_frames:
        write_audio(audio, out_path)
    if as_json:
        click.echo(json.dumps({"user": user, "reply": reply, "reply_audio_s": round(audio.duration, 3),
                               "timeline": timeline}, indent=2))
        return
    stderr.print(f"[bold]you:[/] {user}\n[bold]agent:[/] {reply}")
    if timeline:
        table = Table(title=f"turn timeline (voice-to-voice {timeline['voice_to_voice_ms']} ms)")
        table.add_column("stage")
        table.add_column("ms after speech end", justify="right")
        for stage, ms in timeline["stages_ms"].items():
            table.add_row(stage, f"{ms:.0f}")
        stderr.print(table)
    if not audio.num_frames:
        raise click.ClickException("the agent produced no audio (see the events above)")
    stderr.print(f"reply written to {out_path} ({audio.duration:.2f} s)")
