"""`voxline providers check` and `voxline fakes serve`, as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from voxline.fakes import free_port

PY = sys.executable


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-c",
                           "from voxline.cli import main; main()", *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.fixture(scope="module")
def served() -> object:
    port = free_port()
    proc = subprocess.Popen([PY, "-c", "from voxline.cli import main; main()", "fakes", "serve", "--port", str(port),
                             "--key", "k-123456789012"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("voxline fakes serve did not start: " + (proc.stderr.read() if proc.stderr else ""))
    yield port
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert f"export OPENAI_BASE_URL=http://127.0.0.1:{port}/openai/v1" in out


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    return env


def test_check_against_served_fakes(served: int) -> None:
    port = served
    env = base_env()
    for vendor, prefix in (("DEEPGRAM", "deepgram"), ("ELEVENLABS", "elevenlabs"), ("OPENAI", "openai/v1"),
                           ("ANTHROPIC", "anthropic")):
        env[f"{vendor}_BASE_URL"] = f"http://127.0.0.1:{port}/{prefix}"
        env[f"{vendor}_API_KEY"] = "k-123456789012"
    result = run(["providers", "check", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = {r["provider"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"deepgram", "elevenlabs", "openai", "anthropic"}
    assert all(r["reachable"] and r["key"] == "k-1…9012" for r in rows.values())
    assert "k-123456789012" not in result.stdout + result.stderr

    # a wrong key: reported, masked, exit status 1; an unset one: just "not configured"
    env["ANTHROPIC_API_KEY"] = "wrong-key-abcdefgh"
    del env["DEEPGRAM_API_KEY"]
    result = run(["providers", "check", "--json"], env)
    assert result.returncode == 1
    rows = {r["provider"]: r for r in json.loads(result.stdout)}
    assert rows["anthropic"]["reachable"] is False and "401" in rows["anthropic"]["detail"]
    assert rows["deepgram"]["configured"] is False and rows["deepgram"]["reachable"] is None
    assert "wrong-key-abcdefgh" not in result.stdout

    table = run(["providers", "check"], env)
    assert "anthropic" in table.stdout and "not set" in table.stdout


def test_faults_scripted_over_http(served: int) -> None:
    base = f"http://127.0.0.1:{served}"
    r = httpx.post(f"{base}/_fakes/openai", json={"faults": [{"kind": "rate_limit", "retry_after": 2}]})
    assert r.status_code == 200 and r.json()["faults"][0]["kind"] == "rate_limit"
    r = httpx.get(f"{base}/openai/v1/models", headers={"Authorization": "Bearer k-123456789012"})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert httpx.post(f"{base}/_fakes/openai", json={"faults": [{"kind": "nope"}]}).status_code == 400
    assert httpx.post(f"{base}/_fakes/nobody", json={}).status_code == 404


def test_unreachable_provider_is_reported() -> None:
    env = base_env()
    env["OPENAI_API_KEY"] = "sk-whatever-123456"
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    result = run(["providers", "check", "--json", "--timeout", "0.5"], env)
    assert result.returncode == 1
    row = next(r for r in json.loads(result.stdout) if r["provider"] == "openai")
    assert row["reachable"] is False and row["detail"]
