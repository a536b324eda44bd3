"""Stop signals drain the agent: SIGTERM is how systemd, Docker and Kubernetes stop a service, SIGHUP comes
with a closed terminal, SIGINT with Ctrl-C; each gets the same orderly end, and a second signal ends at once."""

from __future__ import annotations

import asyncio
import logging
import signal

from edge_agent.agent import EdgeAgent
from edge_agent.summary import RunSummary

log = logging.getLogger("edge_agent")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run_until_signalled(agent: EdgeAgent, seconds: float | None = None) -> RunSummary:
    """``agent.run(seconds)``; the first stop signal drains it (`EdgeAgent.stop`), a second cancels the run
    (frames in flight are abandoned; the caller catches CancelledError). Main thread only."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal(sig: signal.Signals) -> None:
        if agent.stopping:
            log.warning("%s again: stopping now, without waiting for frames in flight", sig.name)
            task.cancel()
        else:
            agent.stop(sig.name)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await agent.run(seconds)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
