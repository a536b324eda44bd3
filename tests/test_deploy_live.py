"""The live path on Kubernetes (deploy/k8s/live): the overlays render and validate (tests/test_deploy.py renders
every kustomization; here also with each component), and what is applied together fits together: Services,
NetworkPolicies, PDBs and ServiceMonitors select the pods they mean to, the HPAs scale Deployments that exist on
metrics prometheus-adapter's rules serve, those rules read series the code exports, the agent's config loads the
way the agent loads it and points at a Service that exists, and the Triton init container's script publishes
the model repository once, whatever the order its replicas start in."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.test_dashboard import PROMETHEUS, Prometheus, stopped_at_exit
from tests.test_deploy import K8S, check_cli, checker_module, rendered, strictly_valid
from tests.waiting import wait_until_sync

LIVE = K8S / "live"
RULES = LIVE / "prometheus-adapter" / "rules.yaml"
AGENT = "frosted-edge"


def docs_of(*paths: Path) -> list[dict]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def applied_together(overlay: str, components: tuple[str, ...] = (), tmp_path: Path | None = None) -> list[dict]:
    """What a user applies for ``overlay`` (its kustomization's header says so): ours-tail goes beside deploy/k8s
    (the tail); triton and gpu need only the namespace and the weights PVC from it. With ``components``, the
    overlay is rendered from a copy with them added (kustomize reads only below or beside the overlay's root)."""
    folder = LIVE / "overlays" / overlay
    if components:
        assert tmp_path is not None
        copy = tmp_path / "live"
        shutil.copytree(LIVE, copy)
        folder = copy / "overlays" / f"{overlay}-with-components"
        folder.mkdir()
        (folder / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [f"../{overlay}"], "components": [f"../../components/{c}" for c in components]}))
    docs = rendered(folder)
    if overlay == "ours-tail":
        return docs + rendered(K8S)
    return docs + docs_of(K8S / "namespace.yaml", K8S / "weights-pvc.yaml")


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def matches(selector: dict, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions), or a Service's plain map, against pod labels."""
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    wanted = {**plain, **selector.get("matchLabels", {})}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[operator]:
            return False
    return bool(wanted or selector.get("matchExpressions"))  # an empty selector selecting everything: a mistake


def pod_labels(deployment: dict) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def container_ports(deployment: dict) -> set[str]:
    return {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}


def selected(deployments: dict[str, dict], selector: dict) -> list[str]:
    return [name for name, d in deployments.items() if matches(selector, pod_labels(d))]


def container(deployment: dict, name: str) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def adapter_rules() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["rules"]


# Read from the files, not the rendered overlays, so these checks run where kubectl does not (the overlays
# change nothing of them but the GPU; test_what_is_applied_together_fits_together checks they are listed).
def triton_deployment() -> dict:
    return of_kind(docs_of(LIVE / "overlays" / "triton" / "triton-deployment.yaml"), "Deployment")["frosted-triton"]


def autoscalers() -> dict[str, dict]:
    return of_kind(docs_of(LIVE / "overlays" / "ours-tail" / "tail-hpa.yaml",
                           LIVE / "overlays" / "triton" / "triton-hpa.yaml"), "HorizontalPodAutoscaler")


LIVE_OVERLAYS = sorted(p.name for p in (LIVE / "overlays").iterdir())


def test_live_layout() -> None:
    assert LIVE_OVERLAYS == ["gpu", "ours-tail", "triton"]
    components = sorted(p.name for p in (LIVE / "components").iterdir())
    assert components == ["gpu", "servicemonitors"]


@pytest.mark.parametrize("overlay", LIVE_OVERLAYS)
def test_overlay_with_every_component_renders_and_validates(overlay: str, tmp_path: Path) -> None:
    docs = applied_together(overlay, ("gpu", "servicemonitors"), tmp_path)
    strictly_valid(docs, f"{overlay} with components gpu and servicemonitors")
    assert len(of_kind(docs, "ServiceMonitor")) == 3


@pytest.mark.parametrize("overlay", LIVE_OVERLAYS)
def test_what_is_applied_together_fits_together(overlay: str, tmp_path: Path) -> None:
    docs = applied_together(overlay, ("servicemonitors",), tmp_path)
    deployments = of_kind(docs, "Deployment")
    serving = "frosted-tail" if overlay == "ours-tail" else "frosted-triton"
    assert set(deployments) == {AGENT, serving}

    services = of_kind(docs, "Service")
    for name, service in services.items():  # a Service selects pods that have the ports it forwards to
        pods = selected(deployments, service["spec"]["selector"])
        assert pods, f"Service {name} selects no pod ({service['spec']['selector']})"
        for port in service["spec"]["ports"]:
            for pod in pods:
                assert port["targetPort"] in container_ports(deployments[pod]), \
                    f"Service {name}: targetPort {port['targetPort']} is not a port of {pod}"

    policies = of_kind(docs, "NetworkPolicy")
    assert [selected(deployments, p["spec"]["podSelector"]) for p in policies.values()] == [[serving]], \
        "one NetworkPolicy, on the pods that serve the tail"
    [policy] = policies.values()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    grpc_rules = [r for r in policy["spec"]["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    assert len(grpc_rules) == 1 and len(grpc_rules[0]["from"]) == 1, "gRPC from one kind of peer only"
    [peer] = grpc_rules[0]["from"]
    assert set(peer) == {"podSelector"} and selected(deployments, peer["podSelector"]) == [AGENT], \
        "only the agents reach the tail's gRPC port"
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in container_ports(deployments[serving]), f"{policy['metadata']['name']}: {port}"
    assert all(p["port"] != "http" for r in policy["spec"]["ingress"] for p in r["ports"]), \
        "Triton's HTTP port (plaintext inference) is for the node's probes only"

    for name, budget in of_kind(docs, "PodDisruptionBudget").items():
        assert selected(deployments, budget["spec"]["selector"]), f"PDB {name} selects nothing"

    monitors = of_kind(docs, "ServiceMonitor")
    monitored = set()
    for monitor in monitors.values():
        for service_name in (s for s, svc in services.items()
                             if matches(monitor["spec"]["selector"], svc["metadata"].get("labels", {}))):
            ports = {p["name"] for p in services[service_name]["spec"]["ports"]}
            monitored |= {service_name} if {e["port"] for e in monitor["spec"]["endpoints"]} <= ports else set()
    assert monitored == {f"{AGENT}-metrics", f"{serving}-metrics"}, "every /metrics Service is scraped"

    rule_metrics = {rule["name"]["as"] for rule in adapter_rules()}
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert [a["spec"]["scaleTargetRef"]["name"] for a in autoscalers.values()] == [serving]
    for name, autoscaler in autoscalers.items():
        target = autoscaler["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, f"HPA {name}: {target}"
        for metric in autoscaler["spec"]["metrics"]:
            assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in rule_metrics, \
                f"HPA {name}: {metric} is none of the adapter's metrics {sorted(rule_metrics)}"

    claims = set(of_kind(docs, "PersistentVolumeClaim"))
    config_maps = set(of_kind(docs, "ConfigMap"))
    for name, deployment in deployments.items():
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{name}: {volume}"
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{name}: {volume}"

    gpu = overlay == "gpu"
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        limits = [c.get("resources", {}).get("limits", {}) for c in pod["containers"]]
        assert (pod.get("runtimeClassName") == "nvidia") == gpu, f"{name}: runtimeClassName"
        assert any("nvidia.com/gpu" in limit for limit in limits) == gpu, f"{name}: nvidia.com/gpu"


@pytest.mark.parametrize("overlay", LIVE_OVERLAYS)
def test_the_agent_config_loads_and_points_at_a_service(overlay: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's cameras.yaml with the container's FROSTED_EDGE_* environment, loaded the way `frosted
    edge --config` loads it (TLS files: throwaway certificates at the Secret's paths); its tail address names a
    Service of the overlay, on a port of it, with the transport of what that Service selects."""
    from edge_agent.config import load_agent_config
    from frosted_wire.address import parse_tail_address
    from frosted_wire.certs import throwaway_certificates

    docs = applied_together(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    agent = container(deployments[AGENT], "agent")
    argv = agent["command"] + agent["args"]
    check_cli(argv, f"{overlay}: the agent")
    config_path = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in deployments[AGENT]["spec"]["template"]["spec"]["volumes"]}
    config_mount = mounts[config_path]
    config_map = of_kind(docs, "ConfigMap")[volumes[config_mount["name"]]["configMap"]["name"]]
    text = config_map["data"][config_mount["subPath"]]

    def mount_of(path: str) -> dict:
        found = [m for p, m in mounts.items() if path.startswith(p.rstrip("/") + "/")]
        assert found, f"{overlay}: {path} is on no volume of the agent"
        return volumes[found[0]["name"]]

    document = yaml.safe_load(text)
    tls = document["tail"]["tls"]
    assert {mount_of(tls[k])["secret"]["secretName"] for k in ("ca", "cert", "key")} == {"frosted-edge-tls"}
    assert "persistentVolumeClaim" in mount_of(document["model"]["weights"])
    certs = throwaway_certificates(tmp_path / "tls")
    stand_ins = {tls["ca"]: certs.ca, tls["cert"]: certs.client_cert, tls["key"]: certs.client_key}
    for path, stand_in in stand_ins.items():
        text = text.replace(path, str(stand_in))
    (tmp_path / "cameras.yaml").write_text(text)
    for key in [k for k in os.environ if k.startswith("FROSTED_EDGE_")]:
        monkeypatch.delenv(key)
    for variable in agent.get("env", []):
        monkeypatch.setenv(variable["name"], variable["value"])
    config = load_agent_config(tmp_path / "cameras.yaml", {})
    assert config.metrics.port is not None and str(config.metrics.port) in {
        str(p["containerPort"]) for p in agent["ports"]}

    address = parse_tail_address(config.tail.address)
    host, port = address.target.rsplit(":", 1)
    service_name, namespace, *rest = host.split(".")
    assert namespace == deployments[AGENT]["metadata"]["namespace"] and rest == ["svc"], address
    service = services[service_name]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}, f"{address}: not a port of {service_name}"
    [serving] = selected(deployments, service["spec"]["selector"])
    assert address.triton == (serving == "frosted-triton"), f"{overlay}: {config.tail.address} -> {serving}"
    assert config.tail.tls.server_name is not None and not config.tail.insecure


def test_adapter_rules_read_series_the_tail_and_triton_export() -> None:
    """Each rule's series is one cloud_tail/metrics.py exports (or Triton's, with the flag that makes Triton
    export it); its name.matches takes that series; every rule feeds an HPA and every HPA metric has a rule."""
    exposed = checker_module().exposed_metrics().names
    triton = container(triton_deployment(), "triton")
    used = {m["pods"]["metric"]["name"] for a in autoscalers().values() for m in a["spec"]["metrics"]}
    rules = adapter_rules()
    for rule in rules:
        series = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["seriesQuery"]).group(0)
        assert re.search(rule["name"]["matches"], series), rule
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # per-pod metrics, as the HPAs ask
        if series.startswith("frosted_"):
            assert series in exposed, f"{series}: not a series cloud_tail/metrics.py or edge_agent exports"
        else:
            # TRITON_SERIES: what tritonserver exports with this flag (test_triton_deployment_runs_in_tritonserver)
            assert series in TRITON_SERIES and "--metrics-config=summary_latencies=true" in triton["args"], series
    assert {r["name"]["as"] for r in rules} == used
    assert any(r["seriesQuery"].startswith("frosted_tail_queue_seconds_bucket") for r in rules)


TRITON_SERIES = {"nv_inference_queue_summary_us"}


def adapter_query(rule: dict, namespace: str, pods: list[str]) -> str:
    """The PromQL prometheus-adapter sends for ``rule`` when an HPA asks for the metric of ``pods``."""
    series = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["seriesQuery"]).group(0)
    matchers = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


@contextlib.contextmanager
def prometheus_scraping(tmp_path: Path, targets: dict[str, int]) -> Iterator[Prometheus]:
    """Debian's Prometheus on 127.0.0.1 scraping ``targets`` (pod name -> metrics port) every second, each
    with the `namespace` and `pod` labels the ServiceMonitors' targets carry."""
    if PROMETHEUS is None:
        pytest.skip("Prometheus not installed (apt-get install prometheus)")
    from tests.rig.servers import free_port

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "pods", "static_configs": [
            {"targets": [f"127.0.0.1:{p}"], "labels": {"namespace": "frosted", "pod": pod}}
            for pod, p in targets.items()]}]}))
    process = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with stopped_at_exit(process):
        prometheus = Prometheus(port)
        wait_until_sync(prometheus.ready, "Prometheus ready")
        yield prometheus


def per_pod(prometheus: Prometheus, promql: str) -> dict[str, float]:
    result = prometheus.get("/api/v1/query", query=promql)["result"]
    return {r["metric"]["pod"]: float(r["value"][1]) for r in result if not math.isnan(float(r["value"][1]))}


@pytest.mark.slow  # Prometheus in its own process, a few scrapes
def test_tail_rule_gives_each_pod_its_queue_p95_in_prometheus(tmp_path: Path) -> None:
    """Two pods exporting frosted_tail_queue_seconds (the family as cloud_tail/metrics.py defines it, in a registry
    of their own: the process-wide one belongs to the tails other tests run), one queueing frames ~3 ms, the
    other ~40 ms; the adapter's query, as it sends it for the HPA, gives each pod its own p95, in seconds."""
    import threading

    from prometheus_client import CollectorRegistry, Histogram, start_http_server

    from cloud_tail.metrics import QUEUE_SECONDS
    from tests.rig.servers import free_port

    [rule] = [r for r in adapter_rules() if r["seriesQuery"].startswith(QUEUE_SECONDS._name + "_bucket")]
    waits = {"frosted-tail-quick": 0.003, "frosted-tail-behind": 0.04}
    histograms, ports, servers = {}, {}, []
    for pod in waits:
        registry = CollectorRegistry()
        histograms[pod] = Histogram(QUEUE_SECONDS._name, QUEUE_SECONDS._documentation,
                                    buckets=QUEUE_SECONDS._upper_bounds[:-1], registry=registry)
        ports[pod] = free_port()
        servers.append(start_http_server(ports[pod], "127.0.0.1", registry=registry)[0])
    stop = threading.Event()

    def queue_frames() -> None:  # frames keep arriving, so rate() over the rule's window has something
        while not stop.wait(0.02):
            for pod, seconds in waits.items():
                histograms[pod].observe(seconds)

    feeder = threading.Thread(target=queue_frames, daemon=True)
    feeder.start()
    try:
        with prometheus_scraping(tmp_path, ports) as prometheus:
            query = adapter_query(rule, "frosted", list(waits))
            wait_until_sync(lambda: set(per_pod(prometheus, query)) == set(waits),
                            f"a value per pod from {query}")
            values = per_pod(prometheus, query)
    finally:
        stop.set()
        feeder.join(timeout=10)
        for server in servers:
            server.shutdown()
    assert 0.002 < values["frosted-tail-quick"] <= 0.004, values  # within the 2-4 ms bucket
    assert 0.03 < values["frosted-tail-behind"] <= 0.05, values  # over the HPA's 20 ms target
    [metric] = autoscalers()["frosted-tail"]["spec"]["metrics"]
    assert metric["pods"]["target"]["averageValue"] == "20m"


# --- the Triton init container's script: publish once, atomically ------------------------------------------------


def init_script() -> tuple[str, dict[str, str]]:
    [init] = triton_deployment()["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == ["sh", "-c"]
    return init["args"][0], {e["name"]: e["value"] for e in init["env"]}


def test_init_container_runs_real_frosted_flags_and_the_repository_triton_loads() -> None:
    script, env = init_script()
    lines = [shlex.split(line.strip()) for line in script.splitlines() if line.strip().startswith("frosted ")]
    assert lines and all(argv[:3] == ["frosted", "export", "triton"] for argv in lines)
    for argv in lines:
        check_cli(argv, "the Triton init container")
    triton = container(triton_deployment(), "triton")
    repository = next(a.split("=", 1)[1] for a in triton["args"] if a.startswith("--model-repository="))
    assert repository == "/models/$(REPOSITORY)" and {"name": "REPOSITORY", "value": env["REPOSITORY"]} in \
        triton["env"], "Triton loads the folder the init container publishes"


STUB = """#!/bin/sh
# `frosted` for the init script's test: records its arguments, writes a repository, optionally waits for a file
echo "$@" >> "$STUB_LOG"
out=""; while [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done
mkdir -p "$out/m.tail-onnx/1" "$out/m.tail-python/1" && echo "$HOSTNAME" > "$out/m.tail-onnx/1/written-by"
if [ -n "${STUB_HOLD:-}" ]; then while [ ! -e "$STUB_HOLD" ]; do sleep 0.01; done; fi
"""


def run_init(script: str, env: dict[str, str], models: Path, bin_dir: Path, hostname: str,
             hold: Path | None = None) -> subprocess.Popen:
    local = script.replace("/models/", f"{models}/")
    variables = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOSTNAME": hostname,
                 "STUB_LOG": str(bin_dir / "log"), **({"STUB_HOLD": str(hold)} if hold else {})}
    return subprocess.Popen(["sh", "-c", local], env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_init_container_publishes_the_repository_once(tmp_path: Path) -> None:
    """The script as the pod runs it, with a stand-in `frosted` on PATH: the first replica writes and renames its
    copy into place, without the python-backend tails; one starting beside it that finishes second drops its own
    copy and succeeds; a replica starting later finds the repository and exports nothing."""
    script, env = init_script()
    bin_dir, models = tmp_path / "bin", tmp_path / "models"
    bin_dir.mkdir()
    models.mkdir()
    (bin_dir / "frosted").write_text(textwrap.dedent(STUB))
    (bin_dir / "frosted").chmod(0o755)
    repository = models / env["REPOSITORY"]

    release = tmp_path / "release-second"
    second = run_init(script, env, models, bin_dir, "triton-b", hold=release)  # exports, then waits
    first = run_init(script, env, models, bin_dir, "triton-a")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert (repository / "m.tail-onnx" / "1" / "written-by").read_text().strip() == "triton-a"
    assert not (repository / "m.tail-python").exists()
    release.touch()
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert (repository / "m.tail-onnx" / "1" / "written-by").read_text().strip() == "triton-a"  # kept
    assert sorted(p.name for p in models.iterdir()) == [env["REPOSITORY"]]  # no staging folder left

    third = run_init(script, env, models, bin_dir, "triton-c")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    assert "is there" in out
    assert len((bin_dir / "log").read_text().splitlines()) == 2  # the third exported nothing


# --- the Triton Deployment's own flags, probes and metrics, in a real tritonserver ------------------------------

IDENTITY_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        # DLPack both ways: the backend's numpy path expects numpy 1's layout (cloud_tail/triton_models/tail.py)
        # (and a copy: the input is read-only, which this DLPack cannot export)
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack("y", np.from_dlpack(
            pb_utils.get_input_tensor_by_name(r, "x")).copy())]) for r in requests]
"""
IDENTITY_CONFIG = """
name: "identity"
backend: "python"
max_batch_size: 8
dynamic_batching {}
input [{ name: "x", data_type: TYPE_FP32, dims: [4] }]
output [{ name: "y", data_type: TYPE_FP32, dims: [4] }]
"""


@pytest.mark.slow  # a tritonserver in its own process (~5-10 s to ready)
def test_triton_deployment_runs_in_tritonserver(tmp_path: Path) -> None:
    """tritonserver 2.51 (NGC 24.10, the Deployment's image) started with the Deployment's exact flags, only the
    addresses, ports and files swapped for local ones (a one-model repository, throwaway certificates): it starts
    (every flag is real: --exit-on-error), the readiness and liveness probes' paths answer 200 on the probes'
    port, gRPC takes only clients with a certificate from ca.crt, and after one request the metrics port serves
    the series the adapter's Triton rule reads, at the ServiceMonitor's path."""
    import urllib.request

    import grpc

    from frosted_wire.certs import throwaway_certificates
    from tests.rig.servers import RigUnavailableError
    from tests.rig.triton import TritonServer
    from triton_wire import grpc_service_pb2 as kserve
    from triton_wire import grpc_service_pb2_grpc as kserve_grpc

    triton = container(triton_deployment(), "triton")
    assert triton["command"] == ["tritonserver"]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    monitor = of_kind(docs_of(LIVE / "components" / "servicemonitors" / "servicemonitors.yaml"),
                      "ServiceMonitor")["frosted-triton"]
    [endpoint] = monitor["spec"]["endpoints"]

    repository = tmp_path / "models"
    (repository / "identity" / "1").mkdir(parents=True)
    (repository / "identity" / "config.pbtxt").write_text(IDENTITY_CONFIG)
    (repository / "identity" / "1" / "model.py").write_text(IDENTITY_MODEL)
    certs = throwaway_certificates(tmp_path / "tls")
    files = {"/tls/tls.crt": certs.server_cert, "/tls/tls.key": certs.server_key, "/tls/ca.crt": certs.ca}

    class AsDeployed(TritonServer):
        def command(self) -> list[str]:
            port_of = {"--http-port": self.http_port, "--grpc-port": self.grpc_port,
                       "--metrics-port": self.metrics_port}
            flags = []
            for arg in triton["args"]:
                name, _, value = arg.partition("=")
                if name == "--model-repository":
                    value = str(self.repository)
                elif name in port_of:
                    assert int(value) == ports[{"--http-port": "http", "--grpc-port": "grpc",
                                                "--metrics-port": "metrics"}[name]], arg
                    value = str(port_of[name])
                value = str(files.get(value, value))
                flags.append(f"{name}={value}")
            return [str(self.root / "bin" / "tritonserver"), *flags, f"--backend-directory={self.backends}",
                    "--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1"]

    try:
        server = AsDeployed(repository)
    except RigUnavailableError as exc:
        pytest.skip(str(exc))
    with server:
        def status(probe: str, port: int) -> int:
            path = triton[probe]["httpGet"]["path"]
            assert triton[probe]["httpGet"]["port"] == "http"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status

        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert status(probe, server.http_port) == 200, probe

        credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes(), certs.client_key.read_bytes(),
                                                   certs.client_cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", credentials) as channel:
            stub = kserve_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(kserve.ServerReadyRequest(), timeout=10).ready
            request = kserve.ModelInferRequest(model_name="identity", inputs=[
                kserve.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])],
                raw_input_contents=[bytes(16)])
            stub.ModelInfer(request, timeout=30)
        anonymous = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", anonymous) as channel, \
                pytest.raises(grpc.RpcError):
            kserve_grpc.GRPCInferenceServiceStub(channel).ServerReady(kserve.ServerReadyRequest(), timeout=5)

        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}{endpoint['path']}",
                                    timeout=5) as reply:
            exported = reply.read().decode()
        [rule] = [r for r in adapter_rules() if r["seriesQuery"].startswith("nv_")]
        with prometheus_scraping(tmp_path, {"frosted-triton-0": server.metrics_port}) as prometheus:
            query = adapter_query(rule, "frosted", ["frosted-triton-0"])
            wait_until_sync(lambda: per_pod(prometheus, query), f"Triton's queue p95 from {query}")
            p95_seconds = per_pod(prometheus, query)["frosted-triton-0"]
        assert 0 < p95_seconds < 1, p95_seconds  # one request queued, in seconds, not microseconds
    for series in TRITON_SERIES:
        assert re.search(rf'^{series}{{[^}}]*quantile="0.95"[^}}]*}} ', exported, re.MULTILINE), \
            f"{series} with quantile 0.95 not among Triton's metrics"
