"""Waiting for the tail at start, and telling a tail that is down (retry) from one that refuses us (stop).

gRPC reports both as UNAVAILABLE "failed to connect"; only the details say which. A handshake that failed
on our side (the tail's certificate does not verify, the tail speaks plaintext, not HTTP/2 at all) cannot
heal by retrying. A tail that accepts the connection and closes it during the handshake is refusing us
(plaintext to a TLS tail, or a client certificate it does not accept): tolerated a few times in a row, in
case it was restarting, then fatal. Everything else (refused, timed out, name not resolved) is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from edge_agent.sources import Backoff
from edge_agent.sources.backoff import worth_saying
from edge_agent.uplink import UplinkTransport
from facesplit.errors import FrostedError
from frosted_wire.v1 import tail_pb2

log = logging.getLogger("edge_agent")

# gRPC's details for handshakes that failed on the agent's side: retrying gives the same answer
UNHEALABLE = ("Tls handshake failed", "Hostname Verification Check failed", "Failed to create security handshaker",
              "Failed parsing HTTP/2", "Trying to connect an http1.x server")
CLOSED_IN_HANDSHAKE = "Socket closed"
CLOSED_IN_HANDSHAKE_TOLERATED = 3  # in a row; then the tail is taken to refuse this agent
# Not an outage: the tail (or whatever listens there) answered, and answering again will not change it.
FATAL_CODES = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class TailUnusableError(FrostedError):
    """The tail cannot be used with this configuration; retrying will not help."""


def refusal_hint(insecure: bool, client_cert: bool) -> str:
    """Why a tail closes our connection during the handshake, for this agent's TLS settings."""
    if insecure:
        return "it speaks TLS and --insecure sends plaintext: give --tls-ca instead"
    if client_cert:
        return "it does not accept this agent's client certificate (tail.tls.cert): signed by another CA?"
    return "it requires mutual TLS: give the agent a client certificate (tail.tls.cert and tail.tls.key)"


def past_the_tails_limits(info: tail_pb2.TailInfo, cameras: int, window: int, address: str) -> list[str]:
    """What of this agent's set-up the tail's limits (its GetInfo; 0: not said, as by an older tail or Triton)
    will hold back, in words naming the tail's flag. Not fatal: a camera whose stream is refused retries, and
    gets one when another ends or the tail is restarted with a higher cap; frames past the tail's window wait."""
    said = []
    binding = [(cap, flag) for cap, flag in ((info.max_streams_per_connection, "--max-streams-per-connection"),
                                             (info.max_streams_per_client, "--max-streams-per-client"))
               if 0 < cap < cameras]  # an agent opens a stream per camera, all on its one connection
    if binding:
        room = min(cap for cap, _ in binding)
        caps = ", ".join(f"{flag} {cap}" for cap, flag in binding)
        said.append(f"tail {address} takes at most {room} streams from this agent ({caps}) and this agent has "
                    f"{cameras} cameras, a stream each: {cameras - room} will wait for a free stream; raise "
                    f"{'that cap' if len(binding) == 1 else 'those caps'} on the tail, or split the cameras over "
                    "agents")
    if 0 < (in_flight := info.max_in_flight_per_stream) < window:
        said.append(f"tail.window {window} is more than the {in_flight} frames the tail {address} computes per "
                    f"stream at once (its --max-in-flight): the other {window - in_flight} would wait in transit, "
                    f"adding their latency to every frame; set tail.window to at most {in_flight}")
    return said


async def wait_for_tail(transport: UplinkTransport, address: str, *, timeout: float, backoff: Backoff,
                        refusal: str, on_failure: Callable[[str], None] | None = None) -> tail_pb2.TailInfo:
    """What the tail serves (its GetInfo, or Triton's model config in GetInfo's terms) once it answers;
    raises TailUnusableError when it never can (``refusal`` says why a tail closing the connection in the
    handshake refuses us). ``on_failure`` hears each failed attempt's reason, in words."""
    failures = closed_in_handshake = 0
    while True:
        try:
            info = await transport.describe(timeout)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or exc.code().name
            if exc.code() in FATAL_CODES or any(marker in details for marker in UNHEALABLE):
                raise TailUnusableError(f"tail {address}: {_cause(exc, details)}; not retrying") from None
            closed_in_handshake = closed_in_handshake + 1 if CLOSED_IN_HANDSHAKE in details else 0
            if closed_in_handshake >= CLOSED_IN_HANDSHAKE_TOLERATED:
                raise TailUnusableError(f"tail {address} closed the connection during the TLS handshake "
                                        f"{closed_in_handshake} times in a row: {refusal}") from None
            failures += 1
            if on_failure is not None:
                on_failure(f"{exc.code().name}: {details}")
            if worth_saying(failures):
                log.warning("tail %s not reachable yet (attempt %d: %s: %s); streams will connect when it is",
                            address, failures, exc.code().name, details)
            await asyncio.sleep(backoff.next_delay())
            continue
        if failures:
            log.info("tail %s reachable after %d failed attempt(s)", address, failures)
        return info


def _cause(exc: grpc.aio.AioRpcError, details: str) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return f"its certificate does not verify against the agent's CA (tail.tls.ca / --tls-ca): {details}"
    if "WRONG_VERSION_NUMBER" in details:
        return f"the TLS handshake failed; a plaintext tail (started with --insecure)?: {details}"
    if "Hostname Verification" in details:
        return f"its certificate is not for this host name (tail.tls.server_name overrides it): {details}"
    return f"{exc.code().name}: {details}"


TailCheck = Callable[[tail_pb2.TailInfo], None]
