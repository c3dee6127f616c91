"""`voxline fakes serve`: the local vendor fakes (Deepgram, ElevenLabs, OpenAI, Anthropic) for trying voxline's
cloud adapters, or your own client code, without accounts, keys or network."""

from __future__ import annotations

import click

from voxline.cli.common import reports_errors


@click.group()
def fakes() -> None:
    """Local fakes of the cloud vendors, speaking their wire formats.

    \b
    Example:
      voxline fakes serve --port 8765
    """


@fakes.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--key", default="fake-key", show_default=True, help="The one API key the fakes accept.")
@reports_errors
def serve(host: str, port: int, key: str) -> None:
    """Serve all fakes on one port and print the environment that points voxline at them.

    Faults are scripted over HTTP, e.g. a rate limit on the next OpenAI request:

    \b
      curl -X POST localhost:8765/_fakes/openai -d '{"faults": [{"kind": "rate_limit", "retry_after": 2}]}'

    Kinds: unauthorized, rate_limit, server_error, error_mid_stream, slow_first_byte, malformed, drop.

    \b
    Examples:
      voxline fakes serve
      voxline fakes serve --host 0.0.0.0 --port 9000 --key test-key
    """
    from voxline.fakes import FakeVendors, server

    vendors = FakeVendors(api_key=key)
    srv = server(vendors, host, port, log_level="warning")
    click.echo(f"voxline fakes on {vendors.base}; to use them:")
    for name, value in vendors.env().items():
        click.echo(f"export {name}={value}")
    click.echo("Ctrl-C stops.", err=True)
    srv.run()
