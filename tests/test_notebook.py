"""notebooks/on_demand.ipynb (TR-4928's on-demand scenario): committed without outputs, and it runs end to end on a
fresh kernel of this interpreter with small attack budgets, writing its summary figure when asked."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from facesplit.noise import DEFAULT_PROFILE
from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "on_demand.ipynb"
RESULTS = REPO / "bench" / "results"
KERNEL = "frosted-notebook-test"  # a kernelspec of its own, written per test: never a user's "python3"
# small budgets: the notebook's defaults take about two minutes; these, about 20 s on 2 shared cores
SMALL = {"inversion_steps": 4, "decoder_photos": 4, "decoder_seconds": 2.0, "threads": 1, "seed": 0}

nbformat = pytest.importorskip("nbformat", reason="the dev extra is not installed: pip install -e '.[dev]'")


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def parameters_cell(nb):
    tagged = [cell for cell in code_cells(nb) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell must be tagged 'parameters' (papermill's convention)"
    return tagged[0]


def parameter_names(nb) -> set[str]:
    tree = ast.parse(parameters_cell(nb).source)
    return {target.id for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def with_parameters(nb, values: dict):
    """A copy of ``nb`` with a cell assigning ``values`` right after the parameters cell, as papermill does."""
    out = nbformat.from_dict(json.loads(json.dumps(nb)))
    index = out.cells.index(next(c for c in out.cells if "parameters" in c.metadata.get("tags", [])))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    out.cells.insert(index + 1, cell)
    return out


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"cells {dirty} carry outputs: strip them (e.g. nbstripout) before committing"
    assert not any(key in nb.metadata for key in ("widgets", "papermill")), "run metadata left in the notebook"
    assert nb.metadata["kernelspec"]["language"] == "python"


def test_parameters_cell_comes_first_and_holds_the_budgets() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert code_cells(nb)[0] is parameters_cell(nb), "the parameters cell must be the first code cell"
    names = parameter_names(nb)
    assert set(SMALL) | {"save_png", "shared", "weights", "photo", "profile_name", "attacks"} <= names
    assert "import" not in parameters_cell(nb).source, "the parameters cell holds plain assignments only"
    assert f'profile_name = "{DEFAULT_PROFILE}"' in parameters_cell(nb).source, "the notebook shows the default"


def shipped_ap(profile: str) -> float:
    """The profile's AP@0.3 on MIT+CMU's held-out folds, as the shipped privacy table reports it, or else the
    camera-scale table that measured it."""
    for path in sorted(RESULTS.glob("privacy_table*.json")):
        for row in json.loads(path.read_text())["rows"]:
            if row["profile"] == profile:
                return row["mitcmu_heldout_ap30"]
    for path in sorted(RESULTS.glob("privacy_scale*.json")):
        for by_name in json.loads(path.read_text()).get("accuracy", {}).values():
            if profile in by_name:
                return by_name[profile]["mitcmu"]["ap"]
    raise AssertionError(f"no shipped privacy table measured {profile}")


def kernelspec_for_this_python(folder: Path) -> Path:
    """A kernelspec running ipykernel on this interpreter (the venv's), under ``folder``/kernels."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "frosted (tests)", "language": "python",
        "env": {"OMP_NUM_THREADS": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}}))
    return folder


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path: Path, shared_dir: Path, weights_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient", reason="the dev extra is not installed: pip install -e '.[dev]'")
    pytest.importorskip("ipykernel", reason="the dev extra is not installed: pip install -e '.[dev]'")
    monkeypatch.setenv("JUPYTER_PATH", str(kernelspec_for_this_python(tmp_path / "jupyter")))
    png = tmp_path / "on_demand.png"
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), {
        **SMALL, "shared": str(shared_dir), "weights": str(weights_path), "save_png": str(png)})
    run_dir = tmp_path / "cwd"  # not the notebook's folder: nothing may depend on where it is run from
    run_dir.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=180, allow_errors=False,
                                     resources={"metadata": {"path": str(run_dir)}})
    client.execute()  # raises CellExecutionError on the first cell that fails

    outputs = [out for cell in code_cells(nb) for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "\n".join(out.get("text", "") if out.output_type == "stream" else
                     "\n".join(str(v) for v in out.get("data", {}).values()) for out in outputs)
    assert "Traceback" not in text
    # the AP shown is the shipped results', read from bench/results, for both choices
    assert f"AP@0.3 {shipped_ap(DEFAULT_PROFILE):.3f}" in text
    assert f"AP@0.3 {shipped_ap('clean'):.3f}" in text
    assert "face SSIM" in text and "decoder" in text and "inversion" in text
    assert sum("image/png" in out.get("data", {}) for out in outputs) >= 4, "the notebook's figures are missing"

    assert png.is_file(), "save_png was set but no PNG was written"
    from PIL import Image

    with Image.open(png) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert width >= 600 and height >= 400 and png.stat().st_size > 50_000
    assert pixels.std() > 20, "the figure is blank"
