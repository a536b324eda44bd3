"""A misconfigured edge fails instead of dropping every frame: against a real mutual-TLS tail on loopback, a
handshake that cannot succeed ends the agent in one line; a tail that is merely down is retried and logged
with its full reason, and a file that ended ends the agent even if the tail never came up."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from cloud_tail.server import ServerTls
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from edge_agent.tail_check import TailUnusableError
from frosted.demo import make_clip
from frosted_wire.certs import throwaway_certificates
from tests.conftest import REPO
from tests.rig.servers import free_port
from tests.tail_helpers import running_tail

DEADLINE = 60  # seconds any one agent run may take here before the test fails


class NoFrameBackend:
    """The agent's head for tests in which no frame may reach the tail (the tail refuses or is down)."""

    fingerprint = "f" * 64
    noisy = True

    def encode(self, frame_bgr: np.ndarray):
        raise AssertionError("no frame should reach the head: the uplink never had room")


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "short.mp4", seconds=0.5, fps=10, size=(160, 120))


def agent(address: str, clip: Path, out: Path, **tail: object) -> EdgeAgent:
    config = AgentConfig(tail={"address": address, **tail}, cameras=[{"id": "door", "url": str(clip)}],
                         output=str(out))
    return EdgeAgent(config, NoFrameBackend(), JsonLinesSink(str(out)))


@pytest.mark.parametrize("case", ["insecure", "no client certificate", "client certificate of another CA",
                                  "tail certificate of another CA"])
async def test_a_handshake_that_cannot_succeed_ends_the_agent(case, certs, other, short_clip, tmp_path):
    tls = {
        "insecure": None,
        "no client certificate": {"ca": certs.ca},
        "client certificate of another CA": {"ca": certs.ca, "cert": other.client_cert, "key": other.client_key},
        "tail certificate of another CA": {"ca": other.ca, "cert": certs.client_cert, "key": certs.client_key},
    }[case]
    server_tls = ServerTls(certs.server_cert, certs.server_key, client_ca=certs.ca)
    async with running_tail({}, tls=server_tls) as server:
        address = f"127.0.0.1:{server.port}"
        edge = (agent(address, short_clip, tmp_path / "o.jsonl", insecure=True) if tls is None
                else agent(address, short_clip, tmp_path / "o.jsonl", tls=tls))
        with pytest.raises(TailUnusableError) as refused:
            await asyncio.wait_for(edge.run(), DEADLINE)
    message = str(refused.value)
    assert "\n" not in message and address in message
    if case == "tail certificate of another CA":
        assert "CERTIFICATE_VERIFY_FAILED" in message
    else:
        assert "closed the connection during the TLS handshake" in message


async def test_a_tail_that_is_down_is_logged_in_full_and_an_ended_file_ends_the_agent(short_clip, tmp_path,
                                                                                       caplog):
    caplog.set_level(logging.WARNING, logger="edge_agent")
    edge = agent(f"127.0.0.1:{free_port()}", short_clip, tmp_path / "o.jsonl", insecure=True)
    summary = await asyncio.wait_for(edge.run(), DEADLINE)  # the file ended: done, though the tail never came
    assert summary.answered == {"door": 0}
    unreachable = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert unreachable, caplog.text
    assert "Connection refused" in unreachable[0] and "<AioRpcError" not in unreachable[0], unreachable[0]


async def test_edge_cli_against_a_mutual_tls_tail_without_a_client_certificate(certs, short_clip, weights_path):
    server_tls = ServerTls(certs.server_cert, certs.server_key, client_ca=certs.ca)
    async with running_tail({}, tls=server_tls) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "frosted", "edge", "--source", str(short_clip), "--tail",
            f"127.0.0.1:{server.port}", "--tls-ca", str(certs.ca), "--weights", str(weights_path),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=os.environ.copy())
        _, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 1, stderr.decode()[-2000:]
    errors = [line for line in stderr.decode().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "TLS handshake" in errors[0], stderr.decode()[-2000:]


def test_throwaway_keys_are_created_private(tmp_path, monkeypatch):
    """Never world-readable, not even between creating the file and a chmod afterwards."""
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)  # a chmod after the fact does not count
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    previous = os.umask(0)
    try:
        certs = throwaway_certificates(tmp_path / "tls")
    finally:
        os.umask(previous)
    for key in (certs.server_key, certs.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, oct(key.stat().st_mode)
