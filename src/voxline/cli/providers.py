"""`voxline providers check`: which cloud providers are configured (keys masked) and whether each answers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from voxline.cli.common import reports_errors
from voxline.errors import VoxlineError
from voxline.providers.http import mask_key

# vendor -> (key variable, base URL variable, default base URL, module, class)
VENDORS: dict[str, tuple[str, str, str, str, str]] = {
    "deepgram": ("DEEPGRAM_API_KEY", "DEEPGRAM_BASE_URL", "https://api.deepgram.com", "voxline.providers.deepgram",
                 "DeepgramSTT"),
    "elevenlabs": ("ELEVENLABS_API_KEY", "ELEVENLABS_BASE_URL", "https://api.elevenlabs.io",
                   "voxline.providers.elevenlabs", "ElevenLabsTTS"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1", "voxline.providers.openai",
               "OpenAILLM"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com",
                  "voxline.providers.anthropic", "AnthropicLLM"),
}


async def check_vendor(vendor: str, limit_s: float) -> dict[str, Any]:
    """Configuration and a cheap authenticated request for one vendor; never raises."""
    import importlib

    key_var, url_var, default_url, module, cls = VENDORS[vendor]
    key = os.environ.get(key_var, "")
    base = os.environ.get(url_var) or default_url
    row: dict[str, Any] = {"provider": vendor, "key": mask_key(key) or None, "key_env": key_var,
                           "base_url": base, "configured": bool(key), "reachable": None, "latency_ms": None,
                           "detail": ""}
    if not key:
        row["detail"] = f"set {key_var} to use it"
        return row
    provider = getattr(importlib.import_module(module), cls)(api_key=key, base_url=base, connect_timeout=limit_s,
                                                             first_byte_timeout=limit_s)
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s * 2):
            info = await provider.check()
        row.update(reachable=True, latency_ms=round((time.perf_counter() - t0) * 1000, 1),
                   detail=", ".join(f"{k}: {v}" for k, v in info.items()))
    except (VoxlineError, TimeoutError) as exc:
        row.update(reachable=False, detail=str(exc) or f"no answer within {limit_s * 2:g} s")
    finally:
        await provider.aclose()
    return row


async def check_all(limit_s: float) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(check_vendor(v, limit_s) for v in VENDORS)))


@click.group()
def providers() -> None:
    """Cloud providers (Deepgram, ElevenLabs, OpenAI or compatible, Anthropic).

    \b
    Example:
      voxline providers check
    """


@providers.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds per check.")
@reports_errors
def check(as_json: bool, timeout: float) -> None:
    """Show which providers are configured (keys masked) and reachable.

    Keys come from DEEPGRAM_API_KEY, ELEVENLABS_API_KEY, OPENAI_API_KEY, ANTHROPIC_API_KEY; base URLs from
    the matching *_BASE_URL variables (e.g. those `voxline fakes serve` prints). Exit status 1 if a configured
    provider does not answer.

    \b
    Examples:
      voxline providers check
      voxline providers check --json --timeout 10
      OPENAI_BASE_URL=http://localhost:8000/v1 OPENAI_API_KEY=sk-local voxline providers check
    """
    rows = asyncio.run(check_all(timeout))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        table = Table("provider", "key", "base URL", "reachable", "ms", "detail")
        for r in rows:
            state = "-" if r["reachable"] is None else "[green]yes[/]" if r["reachable"] else "[red]no[/]"
            table.add_row(r["provider"], r["key"] or "[dim]not set[/]", r["base_url"], state,
                          "" if r["latency_ms"] is None else str(r["latency_ms"]), r["detail"])
        Console().print(table)
    if any(r["configured"] and not r["reachable"] for r in rows):
        raise SystemExit(1)
