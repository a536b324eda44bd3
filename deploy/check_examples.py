"""Validate the deployment companions in deploy/ (and Dockerfile.jetson) against the code they configure.

    .venv/bin/python deploy/check_examples.py

One "ok" line per check; on the first failure, one line on stderr and exit status 1. Needs promtool
(Prometheus' checker, /usr/bin/promtool on Debian); uses kubectl's built-in kustomize when kubectl is there.
No pytest, no network, no Docker: the images themselves are not built here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLE = DEPLOY / "cameras.example.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "frosted-dashboard.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
K8S = DEPLOY / "k8s"
DOCKERFILES = (DEPLOY / "Dockerfile.tail", ROOT / "Dockerfile.jetson")
HEALTH_PROBE = DEPLOY / "health_probe.py"

# Labels Prometheus adds to every scraped series, beside the ones the code declares.
TARGET_LABELS = {"job", "instance"}
# The attack code (an adversary's tools) stays out of the product images on purpose.
NOT_IN_IMAGES = {"privacy_attack"}


class CheckFailedError(Exception):
    """A check failed; the message is the one line the user sees."""


def fail_unless(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- the metrics the code exposes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposed:
    """Sample names the code's registries expose, and the labels each carries."""

    labels: dict[str, frozenset[str]]  # sample name -> label names

    @property
    def names(self) -> set[str]:
        return set(self.labels)


def exposed_metrics() -> Exposed:
    from cloud_tail import metrics as tail_metrics
    from edge_agent import metrics as edge_metrics

    labels: dict[str, frozenset[str]] = {}
    for module in (edge_metrics, tail_metrics):
        for name, kind, label_names in _collectors(module):
            base = frozenset(label_names)
            if kind == "counter":
                labels[f"{name}_total"] = base
            elif kind == "histogram":
                labels[f"{name}_bucket"] = base | {"le"}
                labels[f"{name}_sum"] = labels[f"{name}_count"] = base
            elif kind == "gauge":
                labels[name] = base
            else:
                raise CheckFailedError(f"{module.__name__}: metric {name} has type {kind}; "
                                       "teach check_examples.py its suffixes")
    fail_unless(labels, "no metrics found in edge_agent/metrics.py and cloud_tail/metrics.py")
    return Exposed(labels)


def _collectors(module: ModuleType) -> Iterable[tuple[str, str, tuple[str, ...]]]:
    registry = module.REGISTRY
    try:  # prometheus_client has no public way to list a registry's collectors with their label names
        collectors = list(registry._collector_to_names)
        found = [(c._name, c._type, tuple(c._labelnames)) for c in collectors]
    except AttributeError as exc:
        raise CheckFailedError(f"prometheus_client internals changed ({exc}); "
                               "update _collectors in check_examples.py") from None
    public = {(family.name, family.type) for family in registry.collect()}
    fail_unless(public == {(n, t) for n, t, _ in found},
                f"{module.__name__}: REGISTRY.collect() and its collectors disagree; update check_examples.py")
    return found


# --- PromQL references ------------------------------------------------------------------------------------

_METRIC = re.compile(r"\b(frosted_[a-z0-9_]+)\b")
_SELECTOR = re.compile(r"\b(frosted_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(
    r"label_values\(\s*(frosted_[a-z0-9_]+)\s*(?:\{[^}]*\})?\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")


def check_promql(expr: str, exposed: Exposed, where: str) -> set[str]:
    """Fail unless every frosted_* metric in ``expr`` is exposed and every label it names exists; the names."""
    names = set(_METRIC.findall(expr))
    unknown = names - exposed.names
    if unknown:
        raise CheckFailedError(f"{where}: metric {sorted(unknown)[0]} is not exposed by edge_agent/metrics.py or "
                               f"cloud_tail/metrics.py (expression: {' '.join(expr.split())})")
    for metric, matchers in _SELECTOR.findall(expr):
        for label in _MATCHER_LABEL.findall(matchers):
            fail_unless(label in exposed.labels[metric] | TARGET_LABELS,
                        f"{where}: {metric} has no label {label!r} (it has {sorted(exposed.labels[metric])})")
    if names:
        available = set().union(*(exposed.labels[n] for n in names)) | TARGET_LABELS
        for group in _GROUPING.findall(expr):
            for label in (part.strip() for part in group.split(",")):
                fail_unless(not label or label in available,
                            f"{where}: groups by {label!r}, a label none of {sorted(names)} has")
    for metric, label in _LABEL_VALUES.findall(expr):
        fail_unless(label in exposed.labels.get(metric, frozenset()), f"{where}: {metric} has no label {label!r}")
    return names


# --- the checks -------------------------------------------------------------------------------------------


def check_agent_config() -> str:
    from edge_agent.config import load_agent_config
    from frosted_wire.certs import throwaway_certificates

    text = EXAMPLE.read_text()
    tls_paths = sorted(set(re.findall(r"/etc/frosted/tls/[\w.-]+", text)))
    fail_unless(tls_paths, f"{rel(EXAMPLE)}: expected TLS paths under /etc/frosted/tls/")
    with tempfile.TemporaryDirectory() as tmp:
        certs = throwaway_certificates(Path(tmp) / "tls")
        for path in tls_paths:
            name = Path(path).name
            stand_in = certs.ca if name.startswith("ca") else certs.client_key if name.endswith(".key") else \
                certs.client_cert
            text = text.replace(path, str(stand_in))
        copy = Path(tmp) / EXAMPLE.name
        copy.write_text(text)
        with _without_env_prefix("FROSTED_EDGE_"):  # the file alone, not whatever this shell exports
            try:
                config = load_agent_config(copy, {})
            except Exception as exc:
                message = str(exc).replace(str(copy), rel(EXAMPLE))
                raise CheckFailedError(f"{rel(EXAMPLE)} does not validate: {message}") from None
    urls = [c.url for c in config.cameras]
    for kind, test in (("rtsp://", lambda u: u.startswith("rtsp://")), ("whep://", lambda u: u.startswith("whep://")),
                       ("/dev/video", lambda u: u.startswith("/dev/video"))):
        fail_unless(any(test(u) for u in urls), f"{rel(EXAMPLE)}: no {kind} camera among {urls}")
    fail_unless(config.tail.tls.cert is not None and not config.tail.insecure,
                f"{rel(EXAMPLE)}: the example should use mutual TLS")
    edge_ports = _scrape_ports("frosted-edge")
    fail_unless(config.metrics.port in edge_ports,
                f"{rel(EXAMPLE)}: metrics.port {config.metrics.port} is not scraped by {rel(PROMETHEUS)} "
                f"(frosted-edge targets on ports {sorted(edge_ports)})")
    return (f"{rel(EXAMPLE)} validates ({len(config.cameras)} cameras: {', '.join(c.id for c in config.cameras)}; "
            f"TLS paths {', '.join(Path(p).name for p in tls_paths)} stood in by throwaway certificates)")


@contextlib.contextmanager
def _without_env_prefix(prefix: str) -> Iterator[None]:
    saved = {key: value for key, value in os.environ.items() if key.startswith(prefix)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def _scrape_ports(job: str) -> set[int]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    for scrape in config.get("scrape_configs", []):
        if scrape.get("job_name") == job:
            targets = [t for sc in scrape.get("static_configs", []) for t in sc.get("targets", [])]
            return {int(t.rsplit(":", 1)[1]) for t in targets}
    raise CheckFailedError(f"{rel(PROMETHEUS)}: no scrape job {job!r}")


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    fail_unless(found, "promtool not found (Debian: apt-get install prometheus); it checks deploy/prometheus/")
    return found  # type: ignore[return-value]


def run_tool(args: list[str], what: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        first = next((i for i, line in enumerate(lines) if "FAILED" in line or "error" in line.lower()),
                     max(len(lines) - 1, 0))
        detail = " ".join(lines[first:first + 3]) or f"exit status {result.returncode}"
        raise CheckFailedError(f"{what}: {detail[:400]}")
    return output


def check_prometheus(exposed: Exposed) -> str:
    tool = promtool()
    run_tool([tool, "check", "config", str(PROMETHEUS)], f"promtool check config {rel(PROMETHEUS)}")
    rules = run_tool([tool, "check", "rules", str(ALERTS)], f"promtool check rules {rel(ALERTS)}")
    run_tool([tool, "test", "rules", str(ALERT_TESTS)], f"promtool test rules {rel(ALERT_TESTS)}")
    config = yaml.safe_load(PROMETHEUS.read_text())
    fail_unless("alerts.yml" in config.get("rule_files", []), f"{rel(PROMETHEUS)}: rule_files must list alerts.yml")
    alerts = yaml.safe_load(ALERTS.read_text())
    names = set()
    for group in alerts["groups"]:
        for rule in group["rules"]:
            names.add(rule["alert"])
            check_promql(rule["expr"], exposed, f"{rel(ALERTS)}: {rule['alert']}")
    tested = set(re.findall(r"alertname:\s*(\w+)", ALERT_TESTS.read_text()))
    fail_unless(names <= tested, f"{rel(ALERT_TESTS)}: no test for {sorted(names - tested)}")
    count = re.search(r"(\d+) rules found", rules)
    return (f"promtool: {rel(PROMETHEUS)} valid, {rel(ALERTS)} valid ({count.group(1) if count else '?'} rules, "
            f"every alert unit-tested), metric names and labels match the code")


def check_dashboard(exposed: Exposed) -> str:
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as exc:
        raise CheckFailedError(f"{rel(DASHBOARD)}: not valid JSON ({exc})") from None
    fail_unless(isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] >= 36,
                f"{rel(DASHBOARD)}: schemaVersion should be a recent one (>= 36)")
    fail_unless(dashboard.get("uid") and dashboard.get("title"), f"{rel(DASHBOARD)}: needs a uid and a title")
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    fail_unless(ds and ds.get("type") == "datasource" and ds.get("query") == "prometheus",
                f"{rel(DASHBOARD)}: needs a datasource variable DS_PROMETHEUS of type prometheus")
    used: set[str] = set()
    for name, variable in variables.items():
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else str(query or "")
        used |= check_promql(query + " " + variable.get("definition", ""), exposed, f"{rel(DASHBOARD)}: ${name}")
    panels = list(_panels(dashboard.get("panels", [])))
    ids = [p.get("id") for p in panels]
    fail_unless(len(ids) == len(set(ids)), f"{rel(DASHBOARD)}: panel ids repeat")
    charts = [p for p in panels if p.get("type") != "row"]
    for panel in charts:
        where = f"{rel(DASHBOARD)}: panel {panel.get('title')!r}"
        fail_unless(all(k in panel.get("gridPos", {}) for k in "hwxy"), f"{where}: gridPos needs h, w, x, y")
        fail_unless(panel.get("targets"), f"{where}: no queries")
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        fail_unless(all(s and s.get("uid") == "${DS_PROMETHEUS}" for s in sources),
                    f"{where}: every datasource should be ${{DS_PROMETHEUS}}")
        refs = [t.get("refId") for t in panel["targets"]]
        fail_unless(len(refs) == len(set(refs)), f"{where}: refIds repeat")
        for target in panel["targets"]:
            fail_unless(target.get("expr"), f"{where}: a query without expr")
            used |= check_promql(target["expr"], exposed, f"{where} ({target.get('refId')})")
    unused = sorted({_family(n) for n in exposed.names} - {_family(n) for n in used})
    note = f"; not charted: {', '.join(unused)}" if unused else ""
    return f"{rel(DASHBOARD)}: {len(charts)} panels, every query names exposed metrics and labels{note}"


def _panels(panels: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def _family(sample: str) -> str:
    return re.sub(r"_(bucket|sum|count|total)$", "", sample)


def check_provisioning() -> str:
    datasources = _yaml_one(PROVISIONING / "datasources" / "frosted-prometheus.yaml")
    fail_unless(datasources.get("apiVersion") == 1 and any(d.get("type") == "prometheus" and d.get("isDefault")
                                                            for d in datasources.get("datasources", [])),
                "grafana datasource provisioning: needs apiVersion 1 and a default prometheus datasource")
    providers = _yaml_one(PROVISIONING / "dashboards" / "frosted.yaml")
    fail_unless(providers.get("apiVersion") == 1 and all(p.get("type") == "file" and p.get("options", {}).get("path")
                                                          for p in providers.get("providers", [])),
                "grafana dashboard provisioning: needs apiVersion 1 and file providers with options.path")
    return "grafana provisioning: datasource and dashboard provider parse"


def _yaml_one(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckFailedError(f"{rel(path)}: {str(exc).splitlines()[0]}") from None
    fail_unless(isinstance(document, dict), f"{rel(path)}: expected a mapping")
    return document


def check_kubernetes() -> str:
    from cloud_tail.server import TailServerConfig

    documents: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            raise CheckFailedError(f"{rel(path)}: not valid YAML ({str(exc).splitlines()[0]})") from None
        for doc in docs:
            fail_unless(isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"),
                        f"{rel(path)}: every document needs apiVersion and kind")
            if doc["kind"] != "Kustomization":
                fail_unless(doc.get("metadata", {}).get("name"), f"{rel(path)}: a {doc['kind']} without a name")
            documents.append((path, doc))
    kustomization = next((d for _, d in documents if d["kind"] == "Kustomization"), None)
    fail_unless(kustomization, f"{rel(K8S)}: no kustomization.yaml")
    for resource in kustomization.get("resources", []):  # type: ignore[union-attr]
        fail_unless((K8S / resource).is_file(), f"{rel(K8S)}/kustomization.yaml: resource {resource} not found")

    deployment = next((d for _, d in documents if d["kind"] == "Deployment"), None)
    fail_unless(deployment, f"{rel(K8S)}: no Deployment")
    pod = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    container = pod["containers"][0]
    argv = container.get("command", []) + container.get("args", [])
    fail_unless(argv[:2] == ["frosted", "tail"], f"{rel(K8S)}: the Deployment should run `frosted tail`, not {argv}")
    flags = _flag_values(argv)
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca", "--metrics-port", "--listen"):
        fail_unless(flag in flags, f"{rel(K8S)}: the tail Deployment lacks {flag}")
    fail_unless(flags["--listen"].startswith("0.0.0.0:"), f"{rel(K8S)}: --listen must bind 0.0.0.0 in a pod")
    metrics_port = int(flags["--metrics-port"])
    fail_unless(metrics_port in _scrape_ports("frosted-tail"),
                f"{rel(K8S)}: --metrics-port {metrics_port} is not a frosted-tail port in {rel(PROMETHEUS)}")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    weights = env.get("FROSTED_WEIGHTS")
    fail_unless(weights and any(weights.startswith(p.rstrip("/") + "/") for p in mounts),
                f"{rel(K8S)}: FROSTED_WEIGHTS should point into a mounted volume")
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca"):
        fail_unless(any(flags[flag].startswith(p.rstrip("/") + "/") for p in mounts),
                    f"{rel(K8S)}: {flag} {flags[flag]} is not on a mounted volume")

    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_seconds = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    drain = TailServerConfig().drain_seconds
    grace = pod.get("terminationGracePeriodSeconds", 30)
    fail_unless(grace > pre_stop_seconds + drain,
                f"{rel(K8S)}: terminationGracePeriodSeconds {grace} must exceed the preStop sleep "
                f"({pre_stop_seconds:g} s) plus the tail's drain time ({drain:g} s)")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container.get(probe, {}).get("exec", {}).get("command", [])
        fail_unless(command[:1] == ["frosted-health-probe"],
                    f"{rel(K8S)}: {probe} should exec frosted-health-probe (the native grpc probe cannot do TLS)")
        for flag, path in _flag_values(command).items():
            if flag in ("--ca", "--cert", "--key"):
                fail_unless(any(path.startswith(p.rstrip("/") + "/") for p in mounts),
                            f"{rel(K8S)}: {probe} {flag} {path} is not on a mounted volume")

    # gRPC cannot cap connections per address before TLS (deploy/README.md): a public load balancer is open to
    # the sites only
    for path, doc in documents:
        if doc["kind"] == "Service" and doc.get("spec", {}).get("type") == "LoadBalancer":
            fail_unless(doc["spec"].get("loadBalancerSourceRanges"),
                        f"{rel(path)}: the LoadBalancer {doc['metadata']['name']} takes connections from anywhere; "
                        "give loadBalancerSourceRanges (the sites' egress addresses)")
            fail_unless(doc["spec"].get("externalTrafficPolicy") == "Local",
                        f"{rel(path)}: the LoadBalancer {doc['metadata']['name']} needs externalTrafficPolicy: Local, "
                        "else the tail sees nodes' addresses and its per-client caps count nodes")

    checked = 0
    for path, doc in documents:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            argv = c.get("command", []) + c.get("args", [])
            if argv[:1] == ["frosted"]:
                _check_cli(argv, f"{rel(path)}: container {c['name']}")
                checked += 1

    rendered = ""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = run_tool([kubectl, "kustomize", str(K8S)], "kubectl kustomize deploy/k8s")
        kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
        rendered = f"; kubectl kustomize renders {', '.join(kinds)}"
    else:
        rendered = "; kubectl not found, kustomize rendering skipped"
    return (f"{rel(K8S)}: {len(documents)} documents parse; {checked} `frosted` command lines use real flags; "
            f"grace {grace} s > preStop {pre_stop_seconds:g} s + drain {drain:g} s{rendered}")


def _flag_values(argv: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            values[name] = value if eq else (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--")
                                             else "")
    return values


def _check_cli(argv: list[str], where: str) -> None:
    """Fail unless ``argv`` (frosted VERB ... --flags) names a real verb and only options it has."""
    import click

    from frosted.cli import cli

    command: click.Command = cli
    rest = argv[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        fail_unless(sub, f"{where}: `{shlex.join(argv)}`: no such verb {rest[0]!r}")
        command, rest = sub, rest[1:]  # type: ignore[assignment]
    fail_unless(not isinstance(command, click.Group), f"{where}: `{shlex.join(argv)}` names a group, not a verb")
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in rest:
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            fail_unless(flag in known, f"{where}: `frosted {command.name}` has no option {flag}")


def check_dockerfiles() -> str:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                and any(re.fullmatch(pattern.replace("*", ".*"), p.name) for pattern in patterns)}
    for dockerfile in DOCKERFILES:
        fail_unless(dockerfile.is_file(), f"{rel(dockerfile)} not found")
        instructions = _instructions(dockerfile.read_text())
        copied = set()
        for keyword, rest in instructions:
            if keyword == "COPY":
                parts = [p for p in shlex.split(rest) if not p.startswith("--")]
                for source in parts[:-1]:
                    fail_unless((ROOT / source).exists(), f"{rel(dockerfile)}: COPY source {source} does not exist")
                    copied.add(Path(source).parts[0])
        missing = sorted(packages - NOT_IN_IMAGES - copied)
        fail_unless(not missing, f"{rel(dockerfile)}: does not COPY the package(s) {', '.join(missing)}")
        leaked = sorted(NOT_IN_IMAGES & copied)
        fail_unless(not leaked, f"{rel(dockerfile)}: copies {', '.join(leaked)} into a product image")
        entry = [json.loads(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"]
        fail_unless(entry and entry[-1][:1] == ["frosted"], f"{rel(dockerfile)}: ENTRYPOINT should run frosted")
        _check_cli(entry[-1], rel(dockerfile))
        users = [rest for keyword, rest in instructions if keyword == "USER"]
        fail_unless(users and users[-1].split(":")[0] not in ("root", "0"), f"{rel(dockerfile)}: runs as root")
    return f"Dockerfiles: COPY sources exist, every package but {', '.join(sorted(NOT_IN_IMAGES))} is copied, " \
           "ENTRYPOINTs are real `frosted` verbs, non-root (not built: no Docker daemon here)"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction: continuation lines joined, comment lines dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def check_health_probe() -> str:
    """Run the Deployment's probe command line against a real gRPC health server behind mutual TLS."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from frosted_wire.certs import throwaway_certificates

    deployment = next(d for d in yaml.safe_load_all((K8S / "tail-deployment.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = container["readinessProbe"]["exec"]["command"][1:]
    flags = _flag_values(argv)
    server_name = flags.get("--server-name") or "localhost"
    probe = _load_module(HEALTH_PROBE)
    with tempfile.TemporaryDirectory() as tmp:
        certs = throwaway_certificates(Path(tmp), hosts=("127.0.0.1", "localhost", server_name))
        stand_ins = {flags["--ca"]: certs.ca, flags["--cert"]: certs.client_cert, flags["--key"]: certs.client_key}
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        credentials = grpc.ssl_server_credentials([(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
                                                  root_certificates=certs.ca.read_bytes(), require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        try:
            def substitute(token: str) -> str:
                name, eq, value = token.partition("=")
                if name == "--addr":
                    return f"--addr=127.0.0.1:{port}"
                if eq and value in stand_ins:
                    return f"{name}={stand_ins[value]}"
                return str(stand_ins.get(token, token))

            def run(args: list[str]) -> int:
                return _quiet(lambda: probe.main([substitute(a) for a in args]))

            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            fail_unless(run(argv) == 0, f"{rel(HEALTH_PROBE)}: the Deployment's probe fails against a SERVING tail")
            no_client_cert = [a for a in argv if not a.startswith(("--cert", "--key"))]
            fail_unless(run(no_client_cert) != 0,
                        f"{rel(HEALTH_PROBE)}: passes without a client certificate against a mutual-TLS server")
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            fail_unless(run(argv) != 0, f"{rel(HEALTH_PROBE)}: passes while the tail reports NOT_SERVING (draining)")
        finally:
            server.stop(None)
    return (f"{rel(HEALTH_PROBE)}: the Deployment's probe passes on SERVING, fails on NOT_SERVING and without a "
            "client certificate (mutual TLS, throwaway certificates)")


def _load_module(path: Path) -> ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quiet(call: Callable[[], int]) -> int:
    """Run ``call`` with stderr swallowed (the probe's expected failure lines are not this script's output)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return call()


def main() -> int:
    # gRPC core logs the probe's deliberately refused handshake on stderr; this script's output is its lines.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    exposed_holder: list[Exposed] = []

    def exposed() -> Exposed:
        if not exposed_holder:
            exposed_holder.append(exposed_metrics())
        return exposed_holder[0]

    checks: list[tuple[str, Callable[[], str]]] = [
        ("agent config", check_agent_config),
        ("prometheus", lambda: check_prometheus(exposed())),
        ("grafana dashboard", lambda: check_dashboard(exposed())),
        ("grafana provisioning", check_provisioning),
        ("kubernetes", check_kubernetes),
        ("health probe", check_health_probe),
        ("dockerfiles", check_dockerfiles),
    ]
    for name, check in checks:
        try:
            print(f"ok  {check()}", flush=True)
        except CheckFailedError as exc:
            print(f"check_examples: FAIL ({name}): {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a bug or a broken file this script did not foresee: still one line
            print(f"check_examples: FAIL ({name}): {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print(f"all {len(checks)} deploy checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
