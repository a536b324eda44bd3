"""The one naming rule both sides share: which Triton model serves a profile (`frosted export triton` writes
it, the edge agent asks for it)."""

from __future__ import annotations

from facesplit.runtimes import DEFAULT_PRECISION, served_name

COMPOSING_SUFFIXES = (".tail-onnx", ".tail-python", ".boxes")  # the ensemble's parts, not called by agents


def ensemble_name(profile: str | None, split: str, precision: str = DEFAULT_PRECISION) -> str:
    """The ensemble for a profile (its file stem, e.g. ``inception3-alpha-0.4``), or for clean activations at
    ``split`` (``profile=None``): ``clean-SPLIT``; for heads at another ``precision``, marked so
    (`facesplit.runtimes.served_name`: ``inception3-alpha-0.4+int8-head``)."""
    return served_name(profile if profile is not None else f"clean-{split}", precision)
