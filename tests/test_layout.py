"""The repository's layout does not shadow what it imports."""

from __future__ import annotations

from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# imported optionally by torch and the runtimes when present (a CUDA torch brings triton), so not always installed
OPTIONAL_IMPORTS = {"triton", "tensorrt", "cuda", "nncf", "openvino", "onnxruntime", "dlib", "playwright"}


def test_no_bench_script_shadows_a_module_its_imports_would_load() -> None:
    """`python bench/X.py` puts bench/ first on sys.path: a bench/triton.py made torch import it as Triton's
    compiler package, and every MLP probe of the privacy table died on ``triton.language``."""
    taken = set(packages_distributions()) | OPTIONAL_IMPORTS
    clashes = sorted(path.name for path in (ROOT / "bench").glob("*.py") if path.stem in taken)
    assert not clashes, f"bench scripts named like importable modules: {clashes}"
