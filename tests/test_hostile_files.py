"""Files a hostile or careless user hands the product in place of the right one: each is refused in one line
naming it, before it costs gigabytes, waits forever or runs anything; the right files still load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cloud_tail.tls import ServerTls, TlsConfigError, load_server_tls
from edge_agent.tls_files import check_client_tls
from edge_agent.uplink import ClientTls, TlsFileError, open_channel
from facesplit.noise import DEFAULT_PROFILE
from facesplit.noise.profile import MAX_TENSOR_BYTES, NoiseProfile, ProfileError
from facesplit.weights import WeightsError, load_faceboxes
from frosted_wire.certs import CertFiles
from frosted_wire.pem import MAX_PEM_BYTES
from tests.conftest import invoke_frosted, write_one_face_set


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """``head``, then zeros up to ``size`` bytes, none of them on disk."""
    path.write_bytes(head)
    os.truncate(path, size)
    return path


def test_a_profile_declaring_gigabytes_is_refused_from_its_header_before_any_is_read(tmp_path: Path) -> None:
    """A 4 GiB sparse file whose header is a well-formed profile's: safetensors would allocate all of it."""
    size = 4 << 30
    header = {"mu": {"dtype": "F32", "shape": [size // 8], "data_offsets": [0, size // 2]},
              "sigma": {"dtype": "F32", "shape": [size // 8], "data_offsets": [size // 2, size]},
              "__metadata__": {"format": "frosted-noise-profile/1", "alpha": "0.4", "input_size": "1024x1024",
                               "head_fingerprint": "x" * 64}}
    encoded = json.dumps(header).encode()
    path = sparse(tmp_path / "big.safetensors", 8 + len(encoded) + size,
                  len(encoded).to_bytes(8, "little") + encoded)
    with pytest.raises(ProfileError, match=f"big.safetensors: not a noise profile .*{size} bytes, more than the "
                                           f"{MAX_TENSOR_BYTES}"):
        NoiseProfile.load(path)


def test_a_profile_whose_noise_aware_tail_is_not_finite_is_refused(tmp_path: Path) -> None:
    from tests.test_noise import make_profile

    good = make_profile("x" * 64, (2, 2, 2))
    tail = {"conf.0.weight": torch.ones(3), "conf.0.bn.num_batches_tracked": torch.tensor(float("inf"))}
    good.tail_state = tail  # an overflowing step counter is no fault: it is never used
    good.save(tmp_path / "ok.safetensors")
    assert NoiseProfile.load(tmp_path / "ok.safetensors").tail_state is not None
    tail["conf.0.weight"] = torch.tensor([1.0, float("nan"), 1.0])
    good.save(tmp_path / "nan.safetensors")
    with pytest.raises(ProfileError, match=r"nan\.safetensors: its noise-aware tail has weights that are not finite"):
        NoiseProfile.load(tmp_path / "nan.safetensors")


@pytest.mark.parametrize("spoil, says", [
    (lambda state: {**state, 7: torch.zeros(1)}, "named by strings"),
    (lambda state: {**state, "conf.0.weight": [0.0]}, "named by strings"),
    (lambda state: {**state, "conv1.conv.weight": state["conv1.conv.weight"] * float("nan")},
     "conv1.conv.weight holds values that are not finite real numbers"),
    (lambda state: {**state, "conv1.conv.weight": state["conv1.conv.weight"].to(torch.complex64)},
     "conv1.conv.weight holds values that are not finite real numbers"),
], ids=["a key that is no name", "a value that is no tensor", "NaN weights", "complex weights"])
def test_weights_that_would_detect_nothing_are_refused_in_one_line(weights_path: Path, tmp_path: Path, spoil,
                                                                    says: str) -> None:
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    spoilt = tmp_path / "spoilt.pth"
    torch.save(spoil(state), spoilt)
    with pytest.raises(WeightsError, match=says):
        load_faceboxes(spoilt)
    result = invoke_frosted("detect", "--weights", str(spoilt), str(weights_path))
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.returncode == 1 and len(errors) == 1 and "spoilt.pth" in errors[0], result.stderr[-2000:]


def test_coco_labels_nested_past_the_parser_are_one_line(tmp_path: Path) -> None:
    write_one_face_set(tmp_path)
    (tmp_path / "labels.json").write_text("[" * 100_000 + "]" * 100_000)
    result = invoke_frosted("eval", "--coco", str(tmp_path / "labels.json"), "--detections",
                            str(tmp_path / "det.jsonl"), "--folds", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].endswith("labels.json: not COCO labels (nested too deeply)")


@pytest.mark.parametrize("yaml_text, says", [
    ("? [1, 2]\n: x\n", "not valid YAML (line 1: found unhashable key)"),
    ("tail: " + "[" * 100_000 + "]" * 100_000 + "\n", "not a config (nested too deeply)"),
    ("tail: " + "{a: " * 30_000 + "1" + "}" * 30_000 + "\n", "not a config (nested too deeply)"),
], ids=["a list as a key", "lists nested deep", "mappings nested deep"])
def test_a_config_yaml_cannot_take_the_parser_down(tmp_path: Path, yaml_text: str, says: str) -> None:
    config = tmp_path / "cameras.yaml"
    config.write_text(yaml_text)
    result = invoke_frosted("edge", "--config", str(config))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0] == f"Error: {config}: {says}", result.stderr


def test_a_pem_file_the_size_of_a_disk_or_a_fifo_is_refused_unread(tmp_path: Path, certs: CertFiles) -> None:
    """Read whole, a 4 GiB 'CA' took 4.6 GB; a FIFO would block the start for ever."""
    huge = sparse(tmp_path / "ca.pem", 4 << 30, certs.ca.read_bytes())
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=f"ca {huge}: more than a PEM file's {MAX_PEM_BYTES} bytes"):
        check_client_tls(huge, None, None)
    with pytest.raises(ValueError, match="not a regular file, so not a PEM file"):
        check_client_tls(None, fifo, certs.client_key)
    with pytest.raises(TlsConfigError, match=f"server certificate {fifo}: not a regular file"):
        load_server_tls(ServerTls(cert=fifo, key=certs.server_key))
    with pytest.raises(TlsConfigError, match=r"client CA .*ca\.pem: more than a PEM file's"):
        load_server_tls(ServerTls(cert=certs.server_cert, key=certs.server_key, client_ca=huge))
    config = tmp_path / "cameras.yaml"
    config.write_text(f"tail: {{address: 'h:1', tls: {{ca: {huge}}}}}\ncameras: [{{id: a, url: x.mp4}}]\n")
    result = invoke_frosted("edge", "--config", str(config))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "more than a PEM file's" in lines[0], result.stderr
    assert load_server_tls(ServerTls(cert=certs.server_cert, key=certs.server_key, client_ca=certs.ca)).client_ca
    # swapped after the config was checked: the channel reads them the same bounded way, and says which
    with pytest.raises(TlsFileError, match=rf"tail.tls.cert {fifo}: not a regular file"):
        open_channel("h:1", ClientTls(certs.ca, fifo, certs.client_key))


def test_a_profile_whose_noise_does_not_fit_the_head_is_refused_at_start(weights_path: Path, tmp_path: Path) -> None:
    """Its header says the right input size but its noise is a column short: refused when loaded for the head,
    not at the first frame (which, on the edge, waits for a tail)."""
    from facesplit.detector import SplitDetector
    from facesplit.noise.shipped import load_profile_for, resolve_profile

    profile = NoiseProfile.load(resolve_profile(DEFAULT_PROFILE))
    detector = SplitDetector(load_faceboxes(weights_path, profile.split))
    profile.mu, profile.sigma = profile.mu[..., :-1].contiguous(), profile.sigma[..., :-1].contiguous()
    profile.save(tmp_path / "short.safetensors")
    channels, height, width = profile.shape
    with pytest.raises(ProfileError, match=r"short\.safetensors: not a noise profile for this head: its noise is for "
                                           rf"activations \({channels}, {height}, {width}\), the head's at "):
        load_profile_for(detector, str(tmp_path / "short.safetensors"))
