"""`frosted tail` the way an operator runs it: a misconfiguration is one line and a non-zero exit before the
tail listens, and clean activations are served only when asked for by name, loudly."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest

from facesplit.weights import clean_fingerprint
from frosted.commands.tail import SERVE_CLEAN_WARNING
from frosted_wire.certs import throwaway_certificates
from frosted_wire.v1 import tail_pb2
from tests.conftest import invoke_frosted, run_frosted
from tests.rig.servers import free_port
from tests.tail_helpers import PROFILE, detect_all, frame, start_tail_process, stub_for


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return throwaway_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    return throwaway_certificates(tmp_path_factory.mktemp("other"), ca_name="someone else's CA")


@pytest.fixture(scope="module")
def not_pem(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("junk") / "junk.pem"
    path.write_text("this is not a certificate\n")
    return path


def one_error_line(*args: str, status: int = 1) -> str:
    # In this process (the tests that call it take `refuse_to_serve`: a tail that starts anyway fails at once)
    result = invoke_frosted("tail", "--listen", "127.0.0.1:0", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("case", ["client CA not a certificate", "certificate not a certificate",
                                  "key not a key", "key of another certificate", "missing file"])
def test_bad_tls_material_is_one_line_before_the_tail_listens(case, certs, other, not_pem, tmp_path,
                                                              refuse_to_serve):
    files = {"--tls-cert": certs.server_cert, "--tls-key": certs.server_key, "--tls-client-ca": certs.ca}
    missing = tmp_path / "nope.pem"
    flag, bad, message = {
        "client CA not a certificate": ("--tls-client-ca", not_pem, f"client CA {not_pem} is not a PEM certificate"),
        "certificate not a certificate": ("--tls-cert", not_pem,
                                          f"server certificate {not_pem} is not a PEM certificate"),
        "key not a key": ("--tls-key", not_pem, f"server key {not_pem} is not a PEM private key"),
        "key of another certificate": ("--tls-key", other.server_key,
                                       f"server key {other.server_key} does not match the server certificate"),
        "missing file": ("--tls-cert", missing, f"server certificate {missing}: no such file"),
    }[case]
    files[flag] = bad  # only the file the case names is bad
    line = one_error_line(*(arg for option, path in files.items() for arg in (option, str(path))))
    assert message in line, line


def test_one_profile_under_two_names_is_refused_not_half_served(tmp_path, refuse_to_serve):
    """Frames name a profile by its fingerprint: the tail could serve only one of the two, and said nothing."""
    from facesplit.noise.shipped import resolve_profile

    copy = tmp_path / "renamed.safetensors"
    copy.write_bytes(resolve_profile("inception3-alpha-0.4").read_bytes())
    line = one_error_line("--insecure", "--noise", "inception3-alpha-0.4", "--noise", str(copy), status=2)
    assert line.startswith(f"Error: inception3-alpha-0.4 and {copy} are the same profile (fingerprint ")
    assert line.endswith("): serve it once")


def test_a_taken_metrics_port_is_one_line(refuse_to_serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line("--insecure", "--metrics-port", str(port))
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line, line


async def test_clean_activations_are_served_only_with_serve_clean(faceboxes, weights_path):
    clean = frame(np.zeros((128, 32, 32), np.float32), clean_fingerprint(faceboxes))
    for flags, served in (((), {PROFILE}), (("--serve-clean",), {PROFILE, "clean"})):
        port = free_port()
        tail, startup = start_tail_process(port, "--weights", str(weights_path), "--insecure", "--noise", PROFILE,
                                           "--threads", "1", *flags)
        try:
            assert (SERVE_CLEAN_WARNING in startup) == bool(flags), startup
            async with stub_for(port) as stub:
                info = await stub.GetInfo(tail_pb2.GetInfoRequest(), timeout=30)
                assert {p.name for p in info.profiles} == served
                if "clean" not in served:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await detect_all(stub, [clean])
                    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                    assert "is not served here" in refused.value.details()
                else:
                    assert [a.sequence for a in await detect_all(stub, [clean])] == [0]
        finally:
            tail.send_signal(signal.SIGTERM)
            tail.wait(timeout=60)


def test_a_native_input_size_is_one_line(weights_path, refuse_to_serve):
    line = one_error_line("--insecure", "--weights", str(weights_path), "--input-size", "native", status=2)
    assert "the tail needs a fixed input size" in line, line


def test_a_message_limit_too_small_for_any_frame_is_one_line(weights_path, refuse_to_serve):
    line = one_error_line("--insecure", "--weights", str(weights_path), "--noise", PROFILE, "--max-message-bytes",
                          "4096", status=2)
    assert "--max-message-bytes" in line and "smaller than one int8 frame" in line, line


@pytest.mark.parametrize(("listen", "message"), [
    ("127.0.0.1:99999", "port 99999 is out of range (0-65535)"),
    ("127.0.0.1:65536", "port 65536 is out of range (0-65535)"),
    ("127.0.0.1", "expected HOST:PORT"),
    ("::1:50051", "expected HOST:PORT (IPv6 in brackets"),
])
def test_a_listen_address_out_of_range_is_one_line(listen, message, refuse_to_serve):
    # no TLS flags either: the address is checked first, so its error is the one the user sees
    result = invoke_frosted("tail", "--listen", listen, "--insecure")
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]  # a usage error: the flag's value
    assert lines[0].startswith("Error: Invalid value for --listen: ") and message in lines[0], lines[0]


def test_a_port_in_use_is_the_only_line(weights_path):
    """Nothing said before it (the served profiles came first), nor gRPC core's own ERROR line after it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_frosted("tail", "--listen", f"127.0.0.1:{port}", "--insecure", "--weights", str(weights_path),
                             "--noise", PROFILE)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port} (Address already in "
                                                  "use; is another tail running there?)"]


@pytest.mark.parametrize("verb", [("tail", "--listen", "127.0.0.1:0", "--insecure"), ("export", "triton", "--out",
                                                                                        "/tmp/unused-repository")])
def test_split_without_serve_clean_is_a_usage_error_not_ignored(verb, refuse_to_serve):
    result = invoke_frosted(*verb, "--noise", "alpha-0.2", "--split", "inception3")
    assert result.returncode == 2 and "--split places the clean tail (--serve-clean)" in result.stderr, result.stderr
