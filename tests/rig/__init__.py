"""Real servers for tests and benchmarks: an RTSP camera (gst-rtsp-server) and a WHEP camera (aiortc)."""
