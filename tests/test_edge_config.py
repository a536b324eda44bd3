"""The agent's configuration refuses what cannot work, in one line naming the field, before anything starts:
ports out of range, input sizes the head cannot run, TLS files that are not what they claim to be."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.config import ConfigError, load_agent_config
from frosted_wire.certs import CertFiles
from tests.conftest import invoke_frosted

CAMERAS = [{"id": "door", "url": "door.mp4"}]


def config(**sections) -> dict:
    return {"tail": {"address": "tail.example:50051"}, "cameras": CAMERAS, **sections}


def refused(overrides: dict) -> str:
    with pytest.raises(ConfigError) as error:
        load_agent_config(None, overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("address", ["tail.example:99999", "tail.example:0", "127.0.0.1:65536", "[::1]:70000"])
def test_tail_port_must_be_1_to_65535(address):
    message = refused(config(tail={"address": address, "insecure": True}))
    assert message.startswith("tail.address:") and address.rsplit(":", 1)[1] in message and "65535" in message


@pytest.mark.parametrize("address", ["tail.example:1", "10.0.0.7:65535", "[::1]:50051", "[2001:db8::2]:443"])
def test_tail_addresses_a_user_would_write_are_accepted(address):
    assert load_agent_config(None, config(tail={"address": address, "insecure": True})).tail.address == address


@pytest.mark.parametrize("port", [0, 99999, -1])
def test_metrics_port_must_be_1_to_65535(port):
    message = refused(config(tail={"address": "h:1", "insecure": True}, metrics={"port": port}))
    assert message.startswith("metrics.port:")


def test_a_yaml_integer_input_size_is_accepted(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text("tail: {address: 'h:1', insecure: true}\ncameras: [{id: a, url: x.mp4}]\n"
                    "model: {input_size: 1024}\n")
    assert load_agent_config(path, {}).model.input_size == "1024"


@pytest.mark.parametrize("size", ["65536", "99999999999999999968", "8224x32"])
def test_an_input_size_the_head_cannot_run_is_refused(size):
    message = refused(config(tail={"address": "h:1", "insecure": True}, model={"input_size": size}))
    assert message.startswith("model.input_size:") and size.split("x")[0] in message and "8192" in message


def test_insecure_with_tls_files_is_refused(certs):
    message = refused(config(tail={"address": "h:1", "insecure": True, "tls": {"ca": certs.ca}}))
    assert message.startswith("tail:") and "insecure" in message


def _expired_pair(folder: Path, certs: CertFiles) -> tuple[Path, Path]:
    """A client certificate signed by ``certs``' CA that expired yesterday, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = serialization.load_pem_private_key(certs.server_key.read_bytes(), None)  # any key signs: not verified
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old edge")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=3)).not_valid_after(now - dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "old.pem", folder / "old.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("case", ["ca is a video", "cert is a key", "key is a cert", "key of another cert",
                                  "expired cert"])
def test_tls_files_are_parsed_and_the_key_must_match_its_certificate(case, certs, other, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    if case == "expired cert":
        cert, key = _expired_pair(tmp_path, certs)
        tls, named = {"ca": certs.ca, "cert": cert, "key": key}, cert
    else:
        tls, named = {
            "ca is a video": ({"ca": video}, video),
            "cert is a key": ({"ca": certs.ca, "cert": certs.client_key, "key": certs.client_key}, certs.client_key),
            "key is a cert": ({"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_cert},
                              certs.client_cert),
            "key of another cert": ({"ca": certs.ca, "cert": certs.client_cert, "key": other.client_key},
                                    other.client_key),
        }[case]
    message = refused(config(tail={"address": "h:1", "tls": tls}))
    assert message.startswith("tail.tls:") and str(named) in message, message


def test_good_tls_files_are_accepted(certs):
    tls = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}
    assert load_agent_config(None, config(tail={"address": "h:1", "tls": tls})).tail.tls.cert == certs.client_cert


@pytest.mark.parametrize("flags, status, named", [
    # a flag's own value: a usage error, in the flag's terms
    (["--tail", "127.0.0.1:99999", "--insecure"], 2, "--tail: port 99999 is out of range (1-65535)"),
    (["--tail", "h:1", "--insecure", "--metrics-port", "0"], 2, "--metrics-port: Input should be greater"),
    (["--tail", "h:1", "--insecure", "--input-size", "65536"], 2, "--input-size: input size 65536"),
    (["--tail", "h:1", "--insecure", "--window", "0"], 2, "--window: Input should be greater than or equal to 1"),
    # a file that is not what the flag says, an output that cannot be written: the run cannot do its work
    (["--tail", "h:1", "--tls-ca", "README.md"], 1, "tail.tls: ca README.md: not a PEM certificate file"),
    (["--tail", "h:1", "--insecure", "--json", "/"], 1, "output /: is a folder, not a file"),
])
def test_edge_cli_refuses_in_one_line(flags, status, named):
    result = invoke_frosted("edge", "--source", "door.mp4", *flags)
    assert result.returncode == status, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("WARNING", "Usage:", "Try "))]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], result.stderr[-2000:]


def test_a_key_given_twice_in_the_file_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text("tail: {address: 'h:1', insecure: true}\ncameras: [{id: a, url: x.mp4}]\n"
                    "metrics:\n  port: 9100\n  port: 9200\n")
    with pytest.raises(ConfigError) as error:
        load_agent_config(path, {})
    message = str(error.value)
    assert "\n" not in message and "line 5" in message and "'port'" in message and "twice" in message


@pytest.mark.parametrize(("name", "named"), [("FROSTED_EDGE_TAIL__ADRESS", "known here: address"),
                                             ("FROSTED_EDGE_METRICS__PORT__X", "plain value"),
                                             ("FROSTED_EDGE_CAMERA", "names no setting")])
def test_a_misspelt_environment_variable_is_refused(monkeypatch, name, named):
    monkeypatch.setenv(name, "1")
    message = refused(config(tail={"address": "h:1", "insecure": True}))
    assert message.startswith(f"environment: {name}") and named in message


def test_the_environment_overrides_one_nested_value_and_keeps_the_files_others(tmp_path, monkeypatch):
    path = tmp_path / "cameras.yaml"
    path.write_text("tail: {address: 'h:1', insecure: true, window: 3}\ncameras: [{id: a, url: x.mp4}]\n")
    monkeypatch.setenv("FROSTED_EDGE_TAIL__WINDOW", "7")
    loaded = load_agent_config(path, {})
    assert (loaded.tail.window, loaded.tail.address, loaded.tail.insecure) == (7, "h:1", True)
    assert load_agent_config(path, {"tail": {"address": "h:2", "insecure": True}}).tail.address == "h:2"


def test_metrics_and_preview_on_one_port_are_refused():
    message = refused(config(tail={"address": "h:1", "insecure": True}, metrics={"port": 9100},
                             preview={"port": 9100}))
    assert "metrics.port" in message and "preview.port" in message and "9100" in message


def test_edge_usage_that_contradicts_itself_is_refused_before_anything_runs(tmp_path):
    result = invoke_frosted("edge", "--source", "door.mp4", "--tail", "h:1", "--insecure", "--no-noise",
                            "--noise", "alpha-0.2")
    assert result.returncode == 2 and "--no-noise sends clean activations, --noise names a profile" in result.stderr
    path = tmp_path / "cameras.yaml"
    path.write_text("tail: {address: 'h:1', insecure: true}\ncameras: [{id: a, url: x.mp4}]\n")
    before = path.read_text()
    result = invoke_frosted("edge", "--config", str(path), "--json", str(path))
    assert result.returncode == 2 and f"output {path}: is an input" in result.stderr, result.stderr
    assert path.read_text() == before  # the boxes were once appended to the config the next start reads


def test_a_file_without_cameras_is_named_in_the_error(tmp_path):
    path = tmp_path / "cameras.yaml"
    path.write_text("tail: {address: 'h:1', insecure: true}\n")
    with pytest.raises(ConfigError, match=f"^{path}: cameras: Field required$"):
        load_agent_config(path, {})


def test_a_missing_source_is_refused_before_the_model_loads(tmp_path):
    # weights that do not exist: had the agent loaded the model first, that would be the error
    result = invoke_frosted("edge", "--source", str(tmp_path / "nothere.mp4"), "--tail", "h:1", "--insecure",
                            "--weights", str(tmp_path / "missing.pth"))
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert result.returncode == 1 and lines == [f"Error: video file not found: {tmp_path / 'nothere.mp4'}"], lines
