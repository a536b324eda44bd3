"""Profiles that ship with the package (``facesplit/profiles/*.safetensors``), found by name or path."""

from __future__ import annotations

from pathlib import Path

from facesplit.detector import SplitDetector
from facesplit.faceboxes import DEFAULT_SPLIT, activation_shape
from facesplit.noise.profile import NoiseProfile, ProfileError, ProfileMismatchError, split_of
from facesplit.weights import head_fingerprint

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "profiles"


def shipped_profiles() -> dict[str, Path]:
    """Name (file stem, e.g. ``alpha-0.5``) -> path, sorted by name."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.safetensors"))}


def resolve_profile(name_or_path: str) -> Path:
    """A shipped profile's name, or a path to a profile file."""
    shipped = shipped_profiles()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = ", ".join(shipped) or "none"
    raise ProfileError(f"{name_or_path}: no such profile file, and not a shipped profile (shipped: {known})")


def describe(path: Path) -> dict:
    profile = NoiseProfile.load(path)
    width, height = profile.input_size
    return {"name": path.stem, "alpha": profile.alpha, "input_size": f"{width}x{height}", "path": str(path),
            "fingerprint": profile.fingerprint, "noise_aware_tail": profile.tail_state is not None,
            "mean_sigma": round(float(profile.sigma.mean()), 4), "rank": profile.rank, "dct": profile.dct,
            "split": profile.split,
            "fitted_on": {k: v for k, v in profile.fitted_on.items() if k not in ("seen", "history")}}


def split_for(split: str | None, profiles: list[str] | tuple[str, ...]) -> str:
    """The model split a verb runs at: ``split`` when given (``--split``), else the one its profiles were
    fitted at (they must agree), else the default."""
    if split is not None:
        return split
    found = {name: split_of(resolve_profile(name)) for name in profiles}
    splits = sorted(set(found.values()))
    if len(splits) > 1:
        listed = ", ".join(f"{name} at {found[name]}" for name in found)
        raise ProfileMismatchError(f"the profiles were fitted at different model splits ({listed}); one process "
                                   "runs one split: pass profiles of one split")
    return splits[0] if splits else DEFAULT_SPLIT


def load_profile_for(detector: SplitDetector, name_or_path: str) -> NoiseProfile:
    """The profile, checked against the detector's split, head weights and input size."""
    size = detector.input_size
    if size.native:
        raise ProfileError("a noise profile needs a fixed --input-size (it was fitted for one), not 'native'")
    assert size.width is not None and size.height is not None
    path = resolve_profile(name_or_path)
    profile = NoiseProfile.load(path, head_fingerprint(detector.source), (size.width, size.height), detector.split)
    if profile.shape != (head := activation_shape(size.height, size.width)):  # else found at the first frame
        raise ProfileError(f"{path}: not a noise profile for this head: its noise is for activations "
                           f"{profile.shape}, the head's at {size.width}x{size.height} are {head}")
    return profile
