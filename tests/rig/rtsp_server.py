"""A real RTSP camera for tests and benchmarks: GStreamer's gst-rtsp-server serving H.264 on 127.0.0.1.

Run it with Debian's ``/usr/bin/python3`` (the only interpreter with ``python3-gi``), never the venv:

    /usr/bin/python3 tests/rig/rtsp_server.py --port 8554 --mount /cam --image face.png --width 640 --height 480

It serves either a still image (``--image``, frozen into a live stream) or a moving test pattern
(``--pattern ball``), prints ``READY`` on stdout once listening, and runs until killed. The media factory is
shared, so any number of clients read from one encoder, like a real camera.
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstRtspServer, GstVideo  # noqa: E402


def launch_line(args: argparse.Namespace) -> str:
    if args.video:
        # An H.264 MP4 relayed without re-encoding (the camera's encoder is not the machine under test); the
        # RTSP sink's clock paces it in real time. It ends with the file.
        return (f'( filesrc location="{args.video}" ! qtdemux ! h264parse '
                f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
    if args.image:
        # imagefreeze repeats the decoded still at the caps' frame rate; is-live paces it like a sensor.
        source = f'filesrc location="{args.image}" ! pngdec ! imagefreeze is-live=true'
    else:
        source = f"videotestsrc is-live=true pattern={args.pattern}"
    caps = f"video/x-raw,format=I420,width={args.width},height={args.height},framerate={args.fps}/1"
    return (
        f"( {source} ! videoconvert ! videoscale ! videorate ! {caps} "
        f"! x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate={args.bitrate} "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def key_frame_on_play(_server: object, client: GstRtspServer.RTSPClient) -> None:
    """Send each new viewer a key frame right away, as many IP cameras do.

    Without it a client joining the shared stream decodes nothing until the next scheduled key frame (up to
    one GOP, 1 s here); a freshly started server is the worst case, since the first key frame goes into
    building the SDP before anyone plays.
    """

    def play_requested(_client: object, context: GstRtspServer.RTSPContext) -> None:
        encoder = context.media.get_element().get_by_name("enc") if context.media else None
        if encoder is not None:
            event = GstVideo.video_event_new_upstream_force_key_unit(Gst.CLOCK_TIME_NONE, True, 0)
            encoder.get_static_pad("src").send_event(event)

    client.connect("play-request", play_requested)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", default="/cam")
    parser.add_argument("--image", help="PNG still to serve")
    parser.add_argument("--video", help="H.264 MP4 to relay as is (no encoder in the loop)")
    parser.add_argument("--pattern", default="ball", help="videotestsrc pattern when no --image is given")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--bitrate", type=int, default=2000, help="kbit/s")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(True)
    server.connect("client-connected", key_frame_on_play)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"could not listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    print("READY", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
