"""The live preview page of the edge agent (``preview.port``): every camera's latest frame with its boxes, its
counters and state, per-stage latency, and what crossed the wire for it. It shows raw frames, so it exists on
the trusted side only (the cloud tail has nothing like it) and listens on loopback unless told otherwise."""

from edge_agent.preview.board import CameraCounts, CameraView, PreviewBoard
from edge_agent.preview.server import PreviewError, PreviewServer

__all__ = ["CameraCounts", "CameraView", "PreviewBoard", "PreviewError", "PreviewServer"]
