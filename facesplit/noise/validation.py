"""Which heads a profile has been validated on: a record in the profile file's header, written by a measurement.

A head at another precision (int8, float16) is another head (`facesplit.runtimes.fingerprint_at`): a profile
fitted on the float32 head keeps its accuracy there only if someone measured it. `bench/precision_accuracy.py
--record` measures it and, when the AP is within the tolerance, writes what it measured here, under the header's
``validated_heads`` metadata; a tail serves a profile to such heads (`frosted tail --serve-precision`) only if the
record says so. Only the header is rewritten: the tensors, hence the profile's fingerprint, stay bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facesplit.noise.profile import MAX_HEADER_BYTES, ProfileError, read_header, read_metadata
from facesplit.outputs import write_bytes

VALIDATED_HEADS = "validated_heads"  # the metadata key: {precision: what was measured}


def validated_heads(path: Path) -> dict[str, dict[str, Any]]:
    """The precisions ``path``'s profile was validated on, each with what was measured (header only)."""
    text = read_metadata(path).get(VALIDATED_HEADS)
    if not text:
        return {}
    try:
        records = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProfileError(f"{path}: not a noise profile (malformed {VALIDATED_HEADS}: {exc})") from None
    if not isinstance(records, dict) or not all(isinstance(v, dict) for v in records.values()):
        raise ProfileError(f"{path}: not a noise profile (malformed {VALIDATED_HEADS})")
    return records


def record_validation(path: Path, precision: str, measured: dict[str, Any]) -> None:
    """Add (or replace) ``precision``'s record in ``path``'s header; the tensors' bytes are copied as they are.
    Written to a temporary file first and moved over ``path``: a killed run leaves the old file."""
    records = {**validated_heads(path), precision: measured}
    header, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    header["__metadata__"] = {**header.get("__metadata__", {}), VALIDATED_HEADS: json.dumps(records, sort_keys=True)}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads its header to 8 bytes, so the tensors stay aligned
    if len(encoded) > MAX_HEADER_BYTES:
        raise ProfileError(f"{path}: the header would pass safetensors' limit")
    write_bytes(path, len(encoded).to_bytes(8, "little") + encoded + data)


DEFAULT_CALIBRATION = "MIT+CMU folds 1-5 (the default)"  # what a record says of `facesplit.runtimes.int8`'s default


def calibration_caveat(path: Path, calibration: Path | None) -> str | None:
    """Why an int8 head calibrated on ``calibration`` (None: the default frames) is not the head ``path``'s int8
    record measured, or None if it is (or there is no record, which the tail refuses anyway). The fingerprint
    says only "int8": a head calibrated on other frames is another int8 head the tail cannot tell apart."""
    measured = validated_heads(path).get("int8", {}).get("calibration")
    if measured is None:
        return None
    used = str(calibration.resolve()) if calibration is not None else DEFAULT_CALIBRATION
    if used == measured:
        return None
    return (f"the int8 head is calibrated on {used}, but {path.stem}'s int8 validation was measured on a head "
            f"calibrated on {measured}: measure yours with bench/precision_accuracy.py --precision int8 "
            f"--calibration {used if calibration is not None else 'FOLDER'} --noise {path.stem} --record")
