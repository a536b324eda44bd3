"""A compiled head for the attacks: an int8 head (or any head runtime) in place of the torch module.

An int8 head is another head (`facesplit.runtimes.fingerprint_at`): the privacy table measured on the float head
says nothing certain of it, so the attacks are run again through it. The attacker is given that very head: it
knows the weights and can quantize them as the edge did (the default calibration frames are public), so its
training faces and the victims go through the same graph. A graph has one input size, so the attacker's faces go
through whole frames too (`privacy_attack.crops.runs_windows`), exactly what the edge computes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from facesplit.runtimes import HeadRuntime


class RuntimeHead(nn.Module):
    """``runtime``'s activation at ``split`` as `privacy_attack.crops.head_outputs` gives a torch head's.
    ``identity`` names the graph (e.g. its file name, which hashes its calibration): the crop cache keys on it
    through ``state_dict``, so another graph never reads this one's crops."""

    def __init__(self, runtime: HeadRuntime, split: str, identity: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.splits = (split,)
        digest = hashlib.sha256(f"{runtime.name}|{identity}".encode()).digest()
        self.register_buffer("graph_identity", torch.tensor(list(digest), dtype=torch.uint8))

    def split_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        activations = self.runtime.run(x.numpy())
        return {self.splits[0]: torch.from_numpy(np.ascontiguousarray(activations))}
