#!/usr/bin/env python3
"""A gRPC health check over (mutual) TLS, for Kubernetes exec probes on the tail.

Why not the kubelet's native ``grpc:`` probe: it speaks plaintext only, and the tail serves TLS (mutual TLS
with --tls-client-ca) on its one port, so the native probe can never succeed. This script does what the
native probe does (grpc.health.v1.Health/Check), with the pod's certificates. It needs only grpcio and
grpcio-health-checking, which the tail image has anyway. Installed as /usr/local/bin/frosted-health-probe
by deploy/Dockerfile.tail.

Exit status: 0 SERVING; 1 anything else (NOT_SERVING while the tail drains, unreachable, TLS refused,
timeout), with one line on stderr saying which.

    frosted-health-probe --addr 127.0.0.1:50051 --ca /tls/ca.crt \
        --cert /tls-probe/tls.crt --key /tls-probe/tls.key --server-name frosted-tail
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def check(addr: str, *, service: str = "", ca: str | None = None, cert: str | None = None, key: str | None = None,
          server_name: str | None = None, plaintext: bool = False, timeout: float = 2.0) -> str | None:
    """None when ``service`` at ``addr`` answers SERVING, else a one-line reason."""
    if plaintext:
        channel = grpc.insecure_channel(addr)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                                   certificate_chain=_read(cert))
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(addr, credentials, options=options)
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=timeout, wait_for_ready=False)
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return None if status == "SERVING" else status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="HOST:PORT of the tail")
    parser.add_argument("--service", default="", help="health service name ('' = the whole server)")
    parser.add_argument("--ca", help="CA that signed the tail's certificate (PEM)")
    parser.add_argument("--cert", help="client certificate (PEM), when the tail requires mutual TLS")
    parser.add_argument("--key", help="client private key (PEM)")
    parser.add_argument("--server-name", help="name to check the tail's certificate against (not the --addr host)")
    parser.add_argument("--plaintext", action="store_true", help="no TLS (a tail run with --insecure)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds for connect + RPC")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    try:
        reason = check(args.addr, service=args.service, ca=args.ca, cert=args.cert, key=args.key,
                       server_name=args.server_name, plaintext=args.plaintext, timeout=args.timeout)
    except OSError as exc:  # an unreadable certificate file
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        print(f"frosted-health-probe: {args.addr}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
