"""`voxline cost`: what a workload costs on candidate stacks, and which stack fits a latency and a budget."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from voxline.cli.common import reports_errors
from voxline.cost import PriceTable, StackEstimate, estimate, parse_budget, recommend

_prices = click.option("--prices", "prices_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                       default=None, help="Price table (default: the built-in prices.yaml).")


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=160)  # pipes and files get whole rows


def _money(value: Decimal) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:,.4f}"


def _table(rows: list[StackEstimate], title: str, mark: str | None = None) -> Table:
    with_latency = any(r.latency_ms is not None for r in rows)
    table = Table(title=title)
    for col in ("stack", "STT", "LLM", "TTS", "machine", "total", "per hour"):
        table.add_column(col, justify="left" if col == "stack" else "right")
    if with_latency:
        table.add_column("latency ms*", justify="right")
    for r in rows:
        cells = [r.label + ("  <- chosen" if r.name == mark else ""), _money(r.stt), _money(r.llm), _money(r.tts),
                 _money(r.compute), _money(r.total), _money(r.per_hour)]
        if with_latency:
            cells.append("-" if r.latency_ms is None else f"{r.latency_ms:.0f}")
        table.add_row(*cells)
    return table


@click.group()
def cost() -> None:
    """Cost estimates from a dated price table (prices.yaml).

    \b
    Examples:
      voxline cost estimate --hours 100 --use-case podcast-transcription
      voxline cost recommend --latency-ms 1200 --budget 500/month --hours-per-month 200
    """


@cost.command("estimate")
@click.option("--hours", type=float, required=True, help="Hours of the workload (call time, audio, or speech).")
@click.option("--use-case", required=True,
              type=click.Choice(["podcast-transcription", "agent-quality", "agent-budget", "batch-tts",
                                 "premium-tts"]))
@_prices
@reports_errors
def estimate_cmd(hours: float, use_case: str, prices_path: Path | None) -> None:
    """Candidate stacks for a use case and what HOURS of it cost (the recommended stack first).

    \b
    Examples:
      voxline cost estimate --hours 100 --use-case podcast-transcription
      voxline cost estimate --hours 40 --use-case agent-budget --prices my_prices.yaml
    """
    prices = PriceTable.load(prices_path)
    rows = estimate(prices, use_case, hours)
    out = _console()
    out.print(_table(rows, f"{use_case}, {hours:g} h (prices as of {prices.as_of})", mark=rows[0].name))
    if rows[0].latency_ms is not None:
        out.print("* assumed voice-to-voice latency: turn detection + STT final + LLM first sentence + TTS first "
                  "audio, from the latency_ms figures in the price table (sources noted there)")
    workload = prices.raw["use_cases"][use_case]["workload"]
    out.print(f"workload per hour ({workload}): {prices.raw['workloads'][workload]}")


@cost.command("recommend")
@click.option("--latency-ms", type=float, required=True, help="Voice-to-voice latency budget in ms.")
@click.option("--budget", required=True, help="Money per month, e.g. 500 or 500/month (USD).")
@click.option("--hours-per-month", type=float, required=True, help="Hours of calls per month.")
@_prices
@reports_errors
def recommend_cmd(latency_ms: float, budget: str, hours_per_month: float, prices_path: Path | None) -> None:
    """The cheapest conversation stack that meets a latency budget and a monthly budget.

    \b
    Examples:
      voxline cost recommend --latency-ms 1200 --budget 500/month --hours-per-month 200
      voxline cost recommend --latency-ms 800 --budget '$2000' --hours-per-month 1000
    """
    prices = PriceTable.load(prices_path)
    money = parse_budget(budget)
    best, options = recommend(prices, latency_ms, money, hours_per_month)
    out = _console()
    out.print(_table(options, f"{hours_per_month:g} call hours per month (prices as of {prices.as_of})",
                     mark=best.name if best else None))
    out.print("* latency: assumed, from the latency_ms figures in the price table (sources noted there)")
    if best is None:
        raise click.ClickException(f"no stack meets {latency_ms:g} ms within ${money:,.2f}/month; relax one of them")
    out.print(f"Recommended: {best.label}: {_money(best.total)}/month, ~{best.latency_ms:.0f} ms voice to voice")
