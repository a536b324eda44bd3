"""NoiseProfile: learned per-element noise over the head's activation, and its file format.

Applying a profile to an activation ``a`` gives ``z = a + mu + sigma * eps`` with ``eps ~ N(0, I)`` drawn
fresh for every frame. A profile may instead live in a *basis*: R orthonormal directions ``V`` (C, R) of the
activation's channel space (the principal components of clean activations). Then only the activation's
coordinates along them are kept, and the noise is added there:

    z = V (V^T a + mu + sigma * eps)         mu, sigma: (R, H, W)

The dropped directions carry the activation's fine detail (a few percent of its energy), which the tail
barely needs and an attacker reconstructs faces from. A profile may also work per spatial *frequency*
(``dct``): the coordinates are each map's orthonormal 2-D DCT (`facesplit.noise.dct`), mu and sigma are per
(direction, frequency), and z = V DCT^-1(DCT(V^T a) + mu + sigma * eps). ``z`` still has the activation's
(C, H, W) shape, so the wire and the tail are the same for every profile; it holds no more than the R
coordinates.

A profile is fitted for one set of head weights, one split of the model and one input size; it travels
with the tail it was fitted with (optionally a noise-aware tail, stored in the same file).

File: one safetensors file. Tensors ``mu``, ``sigma`` and, when it has one, ``basis`` (C, R, always
float32), and for a noise-aware tail ``tail.*``; metadata (strings) ``format``, ``alpha``, ``input_size``,
``split`` (absent in profiles from before splits existed: ``rdcl``), ``head_fingerprint``, ``fitted_on``
(JSON). The format says what the tensors mean: /1 per channel, /2 with a basis, /3 per spatial frequency
(with or without a basis).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from facesplit.errors import ConflictError, FrostedError
from facesplit.faceboxes import DEFAULT_SPLIT, SPLITS
from facesplit.noise.dct import (
    from_frequencies,
    from_frequencies_channels_last,
    to_frequencies,
    to_frequencies_channels_last,
)
from facesplit.noise.sampler import GaussianStream
from facesplit.noise.streams import NoiseStream
from facesplit.outputs import replacing

FORMAT = "frosted-noise-profile/1"
FORMAT_WITH_BASIS = "frosted-noise-profile/2"  # a /1 reader must refuse a profile with a basis, not misapply it
FORMAT_IN_FREQUENCIES = "frosted-noise-profile/3"  # and a /2 reader one whose noise is per spatial frequency
FORMATS = (FORMAT, FORMAT_WITH_BASIS, FORMAT_IN_FREQUENCIES)


class ProfileError(FrostedError):
    """A profile file that is unreadable, malformed, or fitted for another model or input size."""


class ProfileMismatchError(ProfileError, ConflictError):
    """A profile asked for at a split or input size it was not fitted for."""


def coordinates(basis: torch.Tensor | None, activation: torch.Tensor, dct: bool = False) -> torch.Tensor:
    """(N, C, H, W) -> (N, R, H, W), the activation's coordinates along the (C, R) basis' columns (the
    activation itself without a basis), each map then taken to spatial frequencies if ``dct``."""
    along = activation if basis is None else torch.einsum("cr,nchw->nrhw", basis, activation)
    return to_frequencies(along) if dct else along


def expand(basis: torch.Tensor | None, along_basis: torch.Tensor, dct: bool = False) -> torch.Tensor:
    """(N, R, H, W) coordinates -> (N, C, H, W): the inverse of `coordinates` on the basis' directions."""
    maps = from_frequencies(along_basis) if dct else along_basis
    return maps if basis is None else torch.einsum("cr,nrhw->nchw", basis, maps)


@dataclass
class NoiseProfile:
    mu: torch.Tensor  # (C, H, W) float32, (R, H, W) with a basis: added to every activation
    sigma: torch.Tensor  # mu's shape, float32, > 0: scale of the fresh Gaussian noise
    alpha: float  # the privacy weight it was fitted with: loss = (1 - alpha) task + alpha privacy
    input_size: tuple[int, int]  # (width, height) of the model input it was fitted for
    head_fingerprint: str  # `facesplit.weights.head_fingerprint` of the head it was fitted on
    fitted_on: dict = field(default_factory=dict)  # what data, which images, which task loss, epochs
    tail_state: dict[str, torch.Tensor] | None = None  # noise-aware tail weights, if one was fitted
    basis: torch.Tensor | None = None  # (C, R) orthonormal columns: mu and sigma are (R, H, W); None: per channel
    dct: bool = False  # mu and sigma are per spatial frequency (2-D DCT of each map), not per position
    split: str = DEFAULT_SPLIT  # where the head it was fitted on ends (`facesplit.faceboxes.SPLITS`)

    def __post_init__(self) -> None:
        if self.mu.shape != self.sigma.shape or self.mu.dim() != 3:
            raise ProfileError(f"mu and sigma must be the same 3-d shape, got {tuple(self.mu.shape)} "
                               f"and {tuple(self.sigma.shape)}")
        if not bool((self.sigma > 0).all()) or not bool(torch.isfinite(self.sigma).all()) \
                or not bool(torch.isfinite(self.mu).all()):
            raise ProfileError("sigma must be positive and finite, and mu finite, everywhere")
        # batch-norm's step counters are unused at inference, and overflow the half floats they are saved in
        if any(not bool(torch.isfinite(t).all()) for name, t in (self.tail_state or {}).items()
               if not name.endswith("num_batches_tracked")):
            raise ProfileError("its noise-aware tail has weights that are not finite")
        if self.basis is not None:
            if self.basis.dim() != 2 or self.basis.shape[1] != self.mu.shape[0] \
                    or self.basis.shape[1] > self.basis.shape[0]:
                raise ProfileError(f"the basis must be (C, R) with R = {self.mu.shape[0]} (mu's first dimension) "
                                   f"and R <= C, got {tuple(self.basis.shape)}")
            gram = self.basis.T.float() @ self.basis.float()
            if not torch.allclose(gram, torch.eye(gram.shape[0], device=gram.device), atol=1e-3):
                raise ProfileError("the basis' columns must be orthonormal")
            self.basis = self.basis.float().contiguous()

    @property
    def shape(self) -> tuple[int, int, int]:
        """The activation's (C, H, W): what the profile applies to, and the shape of what it sends."""
        channels = self.mu.shape[0] if self.basis is None else self.basis.shape[0]
        return (channels, *self.mu.shape[1:])  # type: ignore[return-value]

    @property
    def rank(self) -> int | None:
        """R, the directions of channel space kept (None: every channel, no basis)."""
        return None if self.basis is None else int(self.basis.shape[1])

    def coordinates(self, activation: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the coordinates the noise is added to (see `coordinates`)."""
        return coordinates(self.basis, activation, self.dct)

    def expand(self, along_basis: torch.Tensor) -> torch.Tensor:
        """Coordinates back to the activation's space (see `expand`)."""
        return expand(self.basis, along_basis, self.dct)

    def to(self, device: torch.device | str) -> NoiseProfile:
        """The same profile with mu, sigma and the basis on ``device`` (e.g. for an attacker's GPU)."""
        return replace(self, mu=self.mu.to(device), sigma=self.sigma.to(device),
                       basis=None if self.basis is None else self.basis.to(device))

    def centred(self, z: torch.Tensor) -> torch.Tensor:
        """What anyone who knows mu computes from an observed ``z``: its kept part minus mu, in activation
        space (the clean activation's kept part plus zero-mean noise)."""
        return self.expand(self.coordinates(z) - self.mu)

    @property
    def fingerprint(self) -> str:
        """Identifies this exact profile (and tail) on the wire: a tail serves only the profiles it knows."""
        digest = hashlib.sha256(self.head_fingerprint.encode())
        for name, tensor in sorted(self._tensors().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float16).contiguous().numpy().tobytes())
        if self.dct:  # the same numbers per frequency are another profile than per position
            digest.update(b"dct")
        return digest.hexdigest()[:32]

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"mu": self.mu, "sigma": self.sigma}
        if self.basis is not None:
            tensors["basis"] = self.basis
        tensors.update({f"tail.{k}": v for k, v in (self.tail_state or {}).items()})
        return tensors

    def save(self, path: Path, dtype: torch.dtype = torch.float16) -> None:
        """Write the profile; fp16 by default (ships small; sigma is clamped to stay positive)."""
        tensors = {k: v.detach().float().contiguous() for k, v in self._tensors().items()}
        if dtype == torch.float16:
            # the basis stays float32: fp16 would break its orthonormality (and it is small, C x R)
            tensors = {k: v if k == "basis" else (v.clamp(min=6e-5) if k == "sigma" else v).half()
                       for k, v in tensors.items()}
        file_format = FORMAT_IN_FREQUENCIES if self.dct else FORMAT if self.basis is None else FORMAT_WITH_BASIS
        metadata = {"format": file_format, "alpha": repr(self.alpha),
                    "input_size": f"{self.input_size[0]}x{self.input_size[1]}", "split": self.split,
                    "head_fingerprint": self.head_fingerprint, "fitted_on": json.dumps(self.fitted_on)}
        with replacing(path) as partial:
            save_file(tensors, str(partial), metadata=metadata)

    @classmethod
    def load(cls, path: Path, head_fingerprint: str | None = None, input_size: tuple[int, int] | None = None,
             split: str | None = None) -> NoiseProfile:
        """Read a profile; refuse it if it was fitted at another split, for other head weights or for another
        input size."""
        header, _ = read_header(path)
        if (size := _tensor_bytes(header)) > MAX_TENSOR_BYTES:  # before any is read: a sparse file costs nothing
            raise ProfileError(f"{path}: not a noise profile (its tensors are {size} bytes, more than the "
                               f"{MAX_TENSOR_BYTES} of one at the largest input size)")
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError, ValueError) as exc:
            raise ProfileError(f"{path}: not a readable noise profile ({exc})") from None
        metadata = header.get("__metadata__") or {}
        if metadata.get("format") not in FORMATS or "mu" not in tensors or "sigma" not in tensors:
            raise ProfileError(f"{path}: not a noise profile (expected format {FORMAT!r} with mu and sigma)")
        try:
            width, height = _input_size(metadata["input_size"])
            profile = cls(mu=tensors["mu"].float(), sigma=tensors["sigma"].float(), alpha=_alpha(metadata["alpha"]),
                          input_size=(width, height), head_fingerprint=metadata["head_fingerprint"],
                          fitted_on=_fitted_on(metadata.get("fitted_on") or "{}"),
                          tail_state={k[5:]: v.float() for k, v in tensors.items() if k.startswith("tail.")} or None,
                          basis=tensors["basis"].float() if "basis" in tensors else None,
                          dct=metadata["format"] == FORMAT_IN_FREQUENCIES,
                          split=metadata.get("split", DEFAULT_SPLIT))
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None
        except KeyError as exc:  # a header written by something else than `save`
            raise ProfileError(f"{path}: not a noise profile (its header lacks {exc})") from None
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError too
            raise ProfileError(f"{path}: not a noise profile (malformed header: {exc})") from None
        if split is not None and profile.split != split:
            raise ProfileMismatchError(f"{path}: fitted for the model split at {profile.split}, not {split}; "
                               f"pass --split {profile.split}")
        if head_fingerprint is not None and profile.head_fingerprint != head_fingerprint:
            raise ProfileError(f"{path}: fitted for head weights {profile.head_fingerprint[:12]}..., but the "
                               f"loaded weights are {head_fingerprint[:12]}...; refit or use matching weights")
        if input_size is not None and profile.input_size != tuple(input_size):
            raise ProfileMismatchError(f"{path}: fitted for input size {width}x{height}, not "
                               f"{input_size[0]}x{input_size[1]}; pass --input-size {width}x{height}")
        return profile


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header
# mu and sigma (float32) of an 8192x8192 input at the RDCL split (128 x 256 x 256 each), a basis and a tail, with
# room: a file declaring more is not a profile, and is refused from its header before gigabytes are allocated
MAX_TENSOR_BYTES = 256 << 20
_MAX_INPUT_SIDE = 8192  # facesplit.preprocess.MAX_INPUT_SIDE, which imports OpenCV


def _tensor_bytes(header: dict) -> int:
    """The bytes a safetensors header says its tensors take (the largest end offset)."""
    ends = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ProfileError(f"not a readable noise profile (tensor {str(name)[:40]!r} has no data offsets)")
        ends.append(offsets[1])
    return max(ends, default=0)


def _input_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.split("x"))
    if not all(0 < side <= _MAX_INPUT_SIDE and side % 32 == 0 for side in (width, height)):
        raise ValueError(f"input size {text[:40]!r} is no model input (sides: multiples of 32, at most "
                         f"{_MAX_INPUT_SIDE})")
    return width, height


def _alpha(text: str) -> float:
    alpha = float(text)
    if not 0 <= alpha <= 1:  # NaN too
        raise ValueError(f"alpha {text[:40]!r} is not a weight from 0 to 1")
    return alpha


def _fitted_on(text: str) -> dict:
    try:
        fitted_on = json.loads(text)
    except RecursionError:
        raise ValueError("fitted_on is nested too deeply") from None
    if not isinstance(fitted_on, dict) or not isinstance(fitted_on.get("seen", []), list):
        raise ValueError("fitted_on is not a JSON object with a list of the images seen")
    return fitted_on


def read_header(path: Path) -> tuple[dict, int]:
    """A profile file's safetensors header (a JSON object) and where its tensors' bytes begin."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            # the length comes from the file: any 8 bytes read as one, so bound it before reading that much
            if not 0 < header_len <= min(MAX_HEADER_BYTES, os.fstat(f.fileno()).st_size - 8):
                raise ValueError("no safetensors header")
            try:
                header = json.loads(f.read(header_len))
            except RecursionError:
                raise ValueError("the header is nested too deeply") from None
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            if header.get("__metadata__") is not None and not isinstance(header["__metadata__"], dict):
                raise ValueError("malformed metadata")
            return header, 8 + header_len
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: not a readable noise profile ({exc})") from None


def read_metadata(path: Path) -> dict[str, str]:
    """A profile file's metadata strings, from its header alone (no tensors read)."""
    return read_header(path)[0].get("__metadata__") or {}


def split_of(path: Path) -> str:
    """The model split a profile file was fitted at, from its header alone."""
    split = read_metadata(path).get("split", DEFAULT_SPLIT)
    if split not in SPLITS:
        raise ProfileError(f"{path}: not a noise profile (fitted at split {split!r}, which is not one of "
                           f"{', '.join(SPLITS)})")
    return split


class Obfuscator:
    """Applies a profile to activations: z = a + mu + sigma * eps (or, with a basis,
    z = V (V^T a + mu + sigma * eps); per spatial frequency, V DCT^-1(DCT(V^T a) + ...)), eps fresh from a
    `GaussianStream` (or any `NoiseStream`: on a GPU, `facesplit.noise.streams.gaussian_stream("cuda")`; the
    profile is then kept on that device, and activations from elsewhere are moved there)."""

    def __init__(self, profile: NoiseProfile, stream: NoiseStream | None = None) -> None:
        self.stream = stream or GaussianStream()
        if profile.mu.device != self.stream.device:  # mu, sigma and the basis where the noise is drawn
            profile = profile.to(self.stream.device)
        self.profile = profile
        # mu and sigma also laid out channels_last, like the optimized head's output: element-wise ops on
        # tensors of different layouts run several times slower than on matching ones
        self._channels_last = (_as_channels_last(profile.mu), _as_channels_last(profile.sigma))
        # with a basis or per frequency, the work is matrix products in (N, H, W, R) order, on (H, W, R)
        # copies of mu and sigma
        self._hwr = (profile.mu.permute(1, 2, 0).contiguous(), profile.sigma.permute(1, 2, 0).contiguous())
        # per frequency without dropping directions (no basis, or a full one: V V^T = I),
        # z = a + expand(mu) + expand(sigma * eps): only the noise is transformed, and expand(mu) once
        keeps_everything = profile.basis is None or profile.basis.shape[0] == profile.basis.shape[1]
        in_coordinates = profile.basis is not None or profile.dct
        self._mu_expanded = (_as_channels_last(profile.expand(profile.mu[None])[0])
                             if in_coordinates and keeps_everything else None)

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        if tuple(activation.shape[1:]) != self.profile.shape:
            raise ProfileError(f"activation shape {tuple(activation.shape[1:])} does not match the profile's "
                               f"{self.profile.shape}")
        if activation.device != self.stream.device:
            activation = activation.to(self.stream.device)
        if self.profile.basis is not None or self.profile.dct:
            return self._in_coordinates(activation)
        n, c, h, w = activation.shape
        noise = self.stream.normal((n, c, h, w))
        mu, sigma = self.profile.mu, self.profile.sigma
        if not activation.is_contiguous() and activation.is_contiguous(memory_format=torch.channels_last):
            # the draws are i.i.d., so reading the fresh buffer in (N, H, W, C) order is the same distribution
            noise = noise.view(n, h, w, c).permute(0, 3, 1, 2)
            mu, sigma = self._channels_last
        # on the fresh buffer: no temporaries on the per-frame path
        return noise.mul_(sigma).add_(mu).add_(activation)

    def _in_coordinates(self, activation: torch.Tensor) -> torch.Tensor:
        basis, mu, sigma = self.profile.basis, *self._hwr
        if self._mu_expanded is not None:
            n, _, h, w = activation.shape
            noise = self.stream.normal((n, h, w, mu.shape[-1])).mul_(sigma)
            if self.profile.dct:
                noise = from_frequencies_channels_last(noise)
            if basis is not None:
                noise = torch.matmul(noise, basis.T)
            return noise.permute(0, 3, 1, 2).add_(self._mu_expanded).add_(activation)
        # (N, H, W, C) order: a free view of a channels_last activation, and the result comes back channels_last
        values = activation.permute(0, 2, 3, 1)
        if basis is not None:
            values = torch.matmul(values, basis)
        if self.profile.dct:
            values = to_frequencies_channels_last(values)
        noisy = self.stream.normal(tuple(values.shape)).mul_(sigma).add_(mu).add_(values)
        if self.profile.dct:
            noisy = from_frequencies_channels_last(noisy)
        if basis is not None:
            noisy = torch.matmul(noisy, basis.T)
        return noisy.permute(0, 3, 1, 2)


def _as_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> the same values stored (H, W, C), viewed as (C, H, W)."""
    return tensor.permute(1, 2, 0).contiguous().permute(2, 0, 1)
