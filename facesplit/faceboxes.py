"""FaceBoxes (Zhang et al., 2017), split into an edge head and a cloud tail.

The layer names match the official FaceBoxes.PyTorch checkpoint so its state dict loads as is.
The head is the Rapidly Digested Convolutional Layers (RDCL): conv1 -> max-pool -> conv2 -> max-pool,
which turns a 1024x1024 frame into a 128x32x32 activation, and, at a deeper *split*, the first one, two
or three Inception blocks after it (each keeps the 128x32x32 shape, so the wire is the same at every
split). The tail is everything after the head: the remaining Inception blocks, the Multiple Scale
Convolutional Layers and the multibox heads.

Why a deeper split: the RDCL's output is close enough to the pixels that an attacker who knows the
weights inverts it to a recognisable face; after the Inception blocks, far less of the face comes back
(bench/results/attack_budget.md), for about 20 % more computation at the edge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

HEAD_CHANNELS = 128
HEAD_STRIDE = 32  # input pixels per activation cell: the input size must be a multiple of this
INCEPTIONS = ("inception1", "inception2", "inception3")
SPLITS = ("rdcl", *INCEPTIONS)  # where the head ends: after the RDCL, or after that Inception block
DEFAULT_SPLIT = "rdcl"
ANCHORS_PER_CELL = (21, 1, 1)  # stride 32: 16 dense 32-px + 4 dense 64-px + 1 128-px; then 256 px, 512 px


class ConvBNReLU(nn.Module):
    """Convolution, batch norm, ReLU (the checkpoint's ``BasicConv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class CReLUMaxPool(nn.Module):
    """Convolution, batch norm, CReLU (concat(x, -x), ReLU), then 3x3/2 max-pool.

    CReLU gives twice the channels for half the convolution. ReLU and max-pool commute (both are
    monotone), so x and -x are pooled before they are concatenated: the full-resolution 2C-channel tensor
    never exists, which saves a third of the head's time on CPU and changes no output bit.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        pooled = [F.max_pool2d(t, kernel_size=3, stride=2, padding=1) for t in (x, x.neg())]
        return F.relu(torch.cat(pooled, dim=1), inplace=True)


class Inception(nn.Module):
    """Four 32-channel branches: 1x1 | 3x3 avg-pool -> 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(128, 32, kernel_size=1)
        self.branch1x1_2 = ConvBNReLU(128, 32, kernel_size=1)
        self.branch3x3_reduce = ConvBNReLU(128, 24, kernel_size=1)
        self.branch3x3 = ConvBNReLU(24, 32, kernel_size=3, padding=1)
        self.branch3x3_reduce_2 = ConvBNReLU(128, 24, kernel_size=1)
        self.branch3x3_2 = ConvBNReLU(24, 32, kernel_size=3, padding=1)
        self.branch3x3_3 = ConvBNReLU(32, 32, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch1x1_2(pooled),
            self.branch3x3(self.branch3x3_reduce(x)),
            self.branch3x3_3(self.branch3x3_2(self.branch3x3_reduce_2(x))),
        ], dim=1)


def inceptions_in_head(split: str) -> tuple[str, ...]:
    """The Inception blocks the head runs at ``split`` (the tail runs the others)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    return INCEPTIONS[:SPLITS.index(split)]


class FaceBoxesHead(nn.Module):
    """RDCL (+ the Inception blocks up to ``split``): (N, 3, H, W) BGR minus mean -> (N, 128, H/32, W/32),
    all values >= 0."""

    def __init__(self, split: str = DEFAULT_SPLIT) -> None:
        super().__init__()
        self.split = split
        self.conv1 = CReLUMaxPool(3, 24, kernel_size=7, stride=4, padding=3)
        self.conv2 = CReLUMaxPool(48, 64, kernel_size=5, stride=2, padding=2)
        self.inceptions = inceptions_in_head(split)
        for name in self.inceptions:
            self.add_module(name, Inception())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        for name in self.inceptions:
            x = getattr(self, name)(x)
        return x


class FaceBoxesTail(nn.Module):
    """The Inception blocks after ``split`` + MSCL + multibox heads: activation -> (loc (N, P, 4), face
    probability (N, P))."""

    def __init__(self, split: str = DEFAULT_SPLIT) -> None:
        super().__init__()
        self.inceptions = INCEPTIONS[len(inceptions_in_head(split)):]
        for name in self.inceptions:
            self.add_module(name, Inception())
        self.conv3_1 = ConvBNReLU(128, 128, kernel_size=1)
        self.conv3_2 = ConvBNReLU(128, 256, kernel_size=3, stride=2, padding=1)
        self.conv4_1 = ConvBNReLU(256, 128, kernel_size=1)
        self.conv4_2 = ConvBNReLU(128, 256, kernel_size=3, stride=2, padding=1)
        sources = tuple(zip((128, 256, 256), ANCHORS_PER_CELL, strict=True))  # (channels, anchors per cell)
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for c, a in sources)
        self.conf = nn.ModuleList(nn.Conv2d(c, a * 2, kernel_size=3, padding=1) for c, a in sources)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box offsets (N, P, 4) and raw class logits (N, P, 2), P priors in `priors.py` order."""
        for name in self.inceptions:
            x = getattr(self, name)(x)
        s1 = x
        s2 = self.conv3_2(self.conv3_1(s1))
        s3 = self.conv4_2(self.conv4_1(s2))
        n = x.shape[0]
        # NHWC flattening: for each cell (row-major), its anchors in order -- the prior layout relies on it.
        loc = torch.cat([head(s).permute(0, 2, 3, 1).reshape(n, -1, 4)
                         for head, s in zip(self.loc, (s1, s2, s3), strict=True)], dim=1)
        conf = torch.cat([head(s).permute(0, 2, 3, 1).reshape(n, -1, 2)
                          for head, s in zip(self.conf, (s1, s2, s3), strict=True)], dim=1)
        return loc, conf

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, conf = self.logits(x)
        # softmax over two classes, face column only: sigmoid of the logit difference, at half the cost
        return loc, torch.sigmoid(conf[..., 1] - conf[..., 0])


class FaceBoxes(nn.Module):
    """The whole detector as one module: ``tail(head(x))``, split at ``split``. Whatever the split, it
    loads the official checkpoint and computes the same function."""

    def __init__(self, split: str = DEFAULT_SPLIT) -> None:
        super().__init__()
        self.split = split
        self.head = FaceBoxesHead(split)
        self.tail = FaceBoxesTail(split)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tail(self.head(x))

    def load_checkpoint(self, state: dict[str, torch.Tensor]) -> None:
        """Load an official checkpoint (flat keys such as ``conv1.conv.weight``, ``loc.0.bias``)."""
        state = {k.removeprefix("module."): v for k, v in state.items()}
        head_keys = {k for k in self.head.state_dict()}
        mapped = {(f"head.{k}" if k in head_keys else f"tail.{k}"): v for k, v in state.items()}
        self.load_state_dict(mapped, strict=True)

    def at_split(self, split: str) -> FaceBoxes:
        """The same weights split elsewhere (this model itself if already there)."""
        if split == self.split:
            return self
        moved = FaceBoxes(split)
        moved.load_checkpoint({name.split(".", 1)[1]: tensor for name, tensor in self.state_dict().items()})
        return moved.eval()

    def fuse_batchnorm_(self) -> FaceBoxes:
        """Fold every batch norm into its convolution, in place (inference only; ~10 % faster on CPU).

        The state dict no longer matches the checkpoint afterwards: fingerprint and save before fusing.
        """
        for module in self.modules():
            if isinstance(module, ConvBNReLU | CReLUMaxPool) and isinstance(module.bn, nn.BatchNorm2d):
                module.conv = fuse_conv_bn_eval(module.conv.eval(), module.bn.eval())
                module.bn = nn.Identity()
        return self


def activation_shape(height: int, width: int) -> tuple[int, int, int]:
    """(C, H, W) of the head's output for an input of ``height`` x ``width`` (multiples of 32)."""
    return HEAD_CHANNELS, height // HEAD_STRIDE, width // HEAD_STRIDE
