"""The pip requirements of the Jetson image (Dockerfile.jetson): the package's dependencies and the extras asked
for, less what must come from the base image's JetPack builds.

  python3 jetson_requirements.py pyproject.toml [EXTRA,...]    one requirement per line, on stdout

PyPI's aarch64 torch is a CPU build and its aarch64 TensorRT is for Arm servers (SBSA), not a Jetson: both always
come from the base, and a base without TensorRT's bindings fails the image's runtime check in one line. ONNX
Runtime comes from the base where the base has one (jetson-containers' GPU build, distributed as onnxruntime-gpu,
imports as onnxruntime): PyPI's would install a second, CPU-only copy over it. Runs on the base's Python (3.11+),
before the package is installed, so it imports only the standard library.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

ALWAYS_FROM_BASE = frozenset({"torch", "tensorrt"})
FROM_BASE_IF_PRESENT = frozenset({"onnxruntime"})  # distribution names that import as themselves


def distribution(requirement: str) -> str:
    """The distribution a requirement names (``onnxruntime>=1.22`` -> ``onnxruntime``), normalised."""
    return re.split(r"[^A-Za-z0-9_.-]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements(pyproject: Path, extras: list[str],
                 in_base: Callable[[str], bool] = lambda module: importlib.util.find_spec(module) is not None
                 ) -> list[str]:
    """The dependencies and ``extras``' requirements of ``pyproject``, each once, in order, less the base's."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"EXTRAS: no extra {', '.join(map(repr, unknown))} in {pyproject} "
                         f"(it has {', '.join(sorted(optional))})")
    wanted = list(project["dependencies"]) + [r for extra in extras for r in optional[extra]]
    kept: dict[str, str] = {}
    for requirement in wanted:
        name = distribution(requirement)
        if name in ALWAYS_FROM_BASE or (name in FROM_BASE_IF_PRESENT and in_base(name)):
            continue
        kept.setdefault(requirement.strip(), name)
    return list(kept)


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2):
        raise SystemExit("usage: jetson_requirements.py pyproject.toml [EXTRA,...]")
    extras = [extra.strip() for extra in argv[1].split(",") if extra.strip()] if len(argv) == 2 else []
    print("\n".join(requirements(Path(argv[0]), extras)))


if __name__ == "__main__":
    main(sys.argv[1:])
