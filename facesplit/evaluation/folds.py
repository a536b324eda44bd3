"""One fold of an evaluation per process, and the merge: `frosted eval --fold N` writes a fold JSON, and
`frosted eval --merge DIR` combines a folder of them into the whole run's figures.

A fold JSON is the fold's ordinary results JSON plus ``fold_of`` (which fold of which set, split, threshold,
IoUs, model and noise) and ``pool``: every detection's score and whether it matched a face, per IoU, and for
FDDB the fold's share of the ROC. The merge rebuilds each fold's `FoldScore` from those and calls the same
`combine` a single process calls, so its figures are that process's to the last digit.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesplit.evaluation.ap import curve_of
from facesplit.evaluation.errors import DatasetError
from facesplit.evaluation.fddb import RocSteps
from facesplit.evaluation.report import FoldScore, combine

FOLD_FORMAT = "frosted-eval-fold/1"
# provenance that may differ between the folds of one run: where the weights file sat (its sha256 may not),
# where saved detections were read from, and how many images of each fold the profile had seen (summed)
_PER_FOLD = ("weights", "detections_from", "skipped_fitted_images")


def fold_record(scores: dict, fold: FoldScore | None, number: int, fold_count: int, set_fingerprint: str,
                provenance: dict) -> dict:
    """The fold JSON of a `--fold` run: ``scores`` (the fold's results JSON, provenance included) plus what
    `merge_folds` needs. ``fold`` is None where every image of the fold was skipped."""
    pool = None
    if fold is not None:
        pool = {"name": fold.name, "images": fold.images, "faces": fold.faces,
                "by_iou": {iou: {"scores": c.scores.tolist(), "hits": c.hits.astype(int).tolist()}
                           for iou, c in fold.curves.items()}}
        if fold.roc is not None:
            pool["fddb_roc_steps"] = {"thresholds": fold.roc.thresholds.tolist(),
                                      "changes": fold.roc.changes.tolist(), "faces": fold.roc.faces,
                                      "any_without_detections": fold.roc.any_without}
    header = {"format": FOLD_FORMAT, "fold": number, "folds": fold_count, "set_fingerprint": set_fingerprint,
              "ious": list(scores["by_iou"]), "provenance": provenance}
    return {"fold_of": header, **scores, "pool": pool}


@dataclass(frozen=True, eq=False)
class FoldFile:
    path: Path
    number: int
    fold_count: int
    set_name: str
    set_fingerprint: str
    operating_threshold: float
    ious: tuple[str, ...]
    provenance: dict
    score: FoldScore | None  # None: every image of the fold was skipped
    wall_time_s: float

    def agreeing(self) -> dict[str, Any]:
        """What every fold of one run has in common, by the name a mismatch is reported with."""
        same = {k: v for k, v in self.provenance.items() if k not in _PER_FOLD}
        return {"set": self.set_name, "evaluation set (images, labels or fold split)": self.set_fingerprint,
                "number of folds": self.fold_count, "--threshold": self.operating_threshold,
                "IoUs (--iou)": list(self.ious), "provenance keys": sorted(self.provenance), **same}


MAX_FOLDS = 1000  # as `fit-noise --use-folds` takes: past any set's fold count


def read_fold_file(path: Path) -> FoldFile | None:
    """The fold JSON at ``path``; None for a JSON file that is not one (the merged result, say)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise DatasetError(f"{path}: not a fold's result (nested too deeply)") from None
    if not isinstance(data, dict) or "fold_of" not in data:
        return None
    try:
        header = data["fold_of"]
        if header["format"] != FOLD_FORMAT:
            raise DatasetError(f"{path}: fold JSON format {header['format']!r}, this frosted reads {FOLD_FORMAT!r} "
                               "(rerun the fold with this version)")
        ious = tuple(str(iou) for iou in header["ious"])
        number, count = int(header["fold"]), int(header["folds"])
        if not 1 <= number <= count <= MAX_FOLDS:  # a merge lists the folds it waits for: never a billion
            raise DatasetError(f"{path}: fold {number} of {count}; a set has 1 to {MAX_FOLDS} folds, each "
                               "numbered from 1")
        return FoldFile(path, number, count, str(data["set"]),
                        str(header["set_fingerprint"]), float(data["operating_threshold"]), ious,
                        dict(header["provenance"]), _fold_score(data["pool"], int(header["fold"]), ious),
                        float(data.get("wall_time_s", 0.0)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: a malformed fold JSON ({type(exc).__name__}: {exc}); rerun that fold") from None


def _fold_score(pool: dict | None, number: int, ious: tuple[str, ...]) -> FoldScore | None:
    if pool is None:
        return None
    faces, images = int(pool["faces"]), int(pool["images"])
    if faces < 0 or images < 0:
        raise ValueError(f"{faces} faces in {images} images")
    curves = {}
    for iou in ious:
        by_iou = pool["by_iou"][iou]
        scores = np.array(by_iou["scores"], dtype=np.float64).reshape(-1)
        hits = np.array(by_iou["hits"], dtype=bool).reshape(-1)
        if len(scores) != len(hits):
            raise ValueError(f"IoU {iou}: {len(scores)} scores but {len(hits)} match flags")
        if not np.isfinite(scores).all() or int(hits.sum()) > faces:  # an AP outside [0, 1] would follow
            raise ValueError(f"IoU {iou}: {int(hits.sum())} matches of {faces} faces, or a score not finite")
        curves[iou] = curve_of(scores, hits, faces)
    roc = None
    if (steps := pool.get("fddb_roc_steps")) is not None:
        roc = RocSteps(np.array(steps["thresholds"], dtype=np.float64).reshape(-1),
                       np.array(steps["changes"], dtype=np.float64).reshape(-1, 3), int(steps["faces"]),
                       bool(steps["any_without_detections"]))
    return FoldScore(number, str(pool["name"]), images, faces, curves, roc)


def read_fold_folder(folder: Path, cache: dict[Path, tuple[tuple[int, int], FoldFile | None]] | None = None
                     ) -> list[FoldFile]:
    """Every fold JSON in ``folder`` (``*.json``; others are ignored), by fold number. ``cache`` keeps what was
    read, so a waiting merge re-reads only files that changed (by modification time and size)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of fold JSONs")
    cache = {} if cache is None else cache
    found = []
    for path in sorted(folder.glob("*.json")):
        if not path.is_file():  # reading a FIFO would wait for a writer; a link to nothing has nothing to read
            raise DatasetError(f"{path}: not a regular file (a link to nothing, a FIFO or a folder); a fold "
                               "folder holds fold JSONs")
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if path not in cache or cache[path][0] != stamp:
            cache[path] = (stamp, read_fold_file(path))
        if (fold := cache[path][1]) is not None:
            found.append(fold)
    return sorted(found, key=lambda f: (f.number, f.path.name))


def check_one_run(files: Sequence[FoldFile]) -> None:
    """Refuse folds of different runs (set, split, threshold, IoUs, model, noise) and any fold given twice."""
    first = files[0]
    expected = first.agreeing()
    for other in files[1:]:
        for what, value in other.agreeing().items():
            if value != expected.get(what):
                raise DatasetError(f"{first.path.parent}: {first.path.name} and {other.path.name} are folds of "
                                   f"different runs ({what}: {_shown(expected.get(what))} vs {_shown(value)})")
    for a, b in itertools.pairwise(files):
        if a.number == b.number:
            raise DatasetError(f"{a.path.parent}: fold {a.number} given twice ({a.path.name}, {b.path.name})")
    for f in files:
        if not 1 <= f.number <= f.fold_count:
            raise DatasetError(f"{f.path}: fold {f.number}, but the set has folds 1-{f.fold_count}")


def missing_folds(files: Sequence[FoldFile]) -> list[int]:
    have = {f.number for f in files}
    return [n for n in range(1, files[0].fold_count + 1) if n not in have] if files else []


def merge_folds(files: Sequence[FoldFile]) -> dict:
    """The whole run's results JSON from one complete run's fold files (checked here)."""
    if not files:
        raise ValueError("merge_folds needs fold files")
    check_one_run(files)
    first = files[0]
    if missing := missing_folds(files):
        raise DatasetError(f"{first.path.parent}: {_listed(missing)} of {first.fold_count} missing "
                           f"(have {_listed([f.number for f in files])})")
    scored = [f.score for f in files if f.score is not None]
    if not scored:
        raise DatasetError(f"{first.path.parent}: every image of {first.set_name} was skipped in every fold "
                           f"(noise {first.provenance.get('noise')} was fitted on them): nothing to evaluate")
    result = combine(first.set_name, scored, first.ious, first.operating_threshold)
    provenance = dict(first.provenance)
    if "skipped_fitted_images" in provenance:
        provenance["skipped_fitted_images"] = sum(int(f.provenance["skipped_fitted_images"]) for f in files)
    result.update(provenance)
    result["merged_from"] = {"folder": str(first.path.parent), "files": [f.path.name for f in files],
                             "fold_wall_time_s": round(sum(f.wall_time_s for f in files), 2)}
    return result


def wait_for_folds(folder: Path, timeout_s: float, say: Callable[[str], None],
                   poll_s: float = 2.0) -> list[FoldFile]:
    """The complete set of fold files in ``folder``, waiting up to ``timeout_s`` for missing ones to appear
    (fold runs write theirs atomically). Folds of different runs, or a fold twice, fail at once."""
    deadline = time.monotonic() + timeout_s
    reported: tuple[int, ...] | None = None
    cache: dict[Path, tuple[tuple[int, int], FoldFile | None]] = {}
    while True:
        # the folder itself may be made by the first fold run to finish
        files = read_fold_folder(folder, cache) if folder.is_dir() or time.monotonic() >= deadline else []
        if files:
            check_one_run(files)
            if not (missing := missing_folds(files)):
                return files
        else:
            missing = []
        if time.monotonic() >= deadline:
            if not files:
                raise DatasetError(f"{folder}: no fold JSONs (written by `frosted eval --fold N --json FILE`)"
                                   + (f" after waiting {timeout_s:g} s" if timeout_s else ""))
            return files  # merge_folds names what is missing
        if tuple(missing) != reported:
            reported = tuple(missing)
            say(f"Waiting up to {max(deadline - time.monotonic(), 0):.0f} s for "
                + (f"{_listed(missing)} of {files[0].fold_count}" if files else "the first fold JSON")
                + f" in {folder}")
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))


def _listed(numbers: Sequence[int]) -> str:
    return ("fold " if len(numbers) == 1 else "folds ") + ", ".join(str(n) for n in numbers)


def _shown(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
