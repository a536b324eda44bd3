"""Fresh Gaussian noise drawn on the activations' device (a CUDA GPU, or the CPU), from a ChaCha20 keystream.

The CPU sampler (`facesplit.noise.sampler`) runs AES-CTR in OpenSSL, which cannot write into GPU memory; at
thousands of frames per second, copying 131,072 normals per frame up to the GPU would cost more than the head.
Here the keystream is ChaCha20's block function (RFC 8439) written in torch integer ops, vectorised over blocks,
so the same code runs on the CPU and on CUDA (and compiles to one kernel with ``torch.compile``). The cipher's
guarantees are the CPU path's: a 256-bit key from ``os.urandom``, a block counter that only moves forward, and
a fresh key when it would wrap, so no (key, nonce, counter) block is ever used twice. Words become normals as
in the CPU path: 23-bit mantissa uniforms on (0, 1], then Box-Muller (`facesplit.noise.sampler.box_muller_`).

Words are 32-bit but torch has no uint32 add or shift (CPU, torch 2.13): they are held in int64, in
[0, 2^32), masked after each add and rotation, where nothing can overflow.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os

import torch

from facesplit.noise.sampler import box_muller_

log = logging.getLogger(__name__)

_SIGMA = b"expand 32-byte k"  # RFC 8439's four constant words
_MASK = 0xFFFFFFFF
_ONE_BITS = 0x3F800000  # the bits of 1.0f
BLOCK_WORDS = 16
COUNTER_LIMIT = 1 << 32  # a 32-bit block counter: at most this many blocks per key and nonce
NONCE = bytes(12)  # every key is used with this one nonce: the key is what never repeats


def state_words(key: bytes, nonce: bytes, device: torch.device | str = "cpu") -> torch.Tensor:
    """ChaCha20's initial state with the counter word zero: (16,) int64 words on ``device``."""
    if len(key) != 32 or len(nonce) != 12:
        raise ValueError(f"ChaCha20 takes a 32-byte key and a 12-byte nonce, not {len(key)} and {len(nonce)}")
    words = _SIGMA + key + bytes(4) + nonce
    return torch.tensor([int.from_bytes(words[i:i + 4], "little") for i in range(0, 64, 4)], dtype=torch.int64,
                        device=device)


def initial_states(state: torch.Tensor, counter: int, blocks: int) -> torch.Tensor:
    """(16, blocks) int64: ``state`` (from `state_words`) with block counters ``counter`` .. ``+ blocks - 1``."""
    if counter < 0 or blocks < 0 or counter + blocks > COUNTER_LIMIT:
        raise ValueError(f"blocks {counter}..{counter + blocks - 1} do not fit ChaCha20's 32-bit counter")
    initial = state[:, None].expand(BLOCK_WORDS, blocks).clone()
    initial[12] = torch.arange(counter, counter + blocks, dtype=torch.int64, device=state.device)
    return initial


def keystream(initial: torch.Tensor) -> torch.Tensor:
    """The keystream of (16, n) initial states: (n, 16) int64 words in [0, 2^32), in keystream order (each
    word little-endian in the byte stream)."""
    return chacha20_rounds(initial).add_(initial).bitwise_and_(_MASK).T


def keystream_blocks(state: torch.Tensor, counter: int, blocks: int) -> torch.Tensor:
    """Blocks ``counter`` .. ``counter + blocks - 1`` of the keystream of ``state``: (blocks, 16) words."""
    return keystream(initial_states(state, counter, blocks))


def normals_from_keystream(initial: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` standard normals from the keystream of (16, n) initial states (16 n >= count + 1)."""
    pairs = (count + 1) // 2
    words = keystream(initial).reshape(-1)[:2 * pairs]
    # the CPU path's uniforms: a word's top 23 bits as the mantissa of a float in [1, 2), then 2 - x
    uniform = words.bitwise_right_shift(9).bitwise_or_(_ONE_BITS).to(torch.int32).view(torch.float32)
    return box_muller_(uniform.neg_().add_(2.0))[:count]


def chacha20_blocks(key: bytes, nonce: bytes, counter: int, blocks: int,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """RFC 8439's keystream blocks for ``key``, ``nonce`` and a first block ``counter``: (blocks, 16) words."""
    return keystream_blocks(state_words(key, nonce, device), counter, blocks)


def chacha20_rounds(state: torch.Tensor) -> torch.Tensor:
    """The 20 rounds on (16, n) states, one block per column; the input is left as it was.

    The four rows of the 4x4 matrix are (4, n) tensors, so one call of `_quarter_round` does a whole column
    round; rolling rows b, c, d by 1, 2, 3 lines the diagonals up as columns for the diagonal round."""
    a, b, c, d = state.view(4, 4, -1).unbind(0)
    for _ in range(10):
        a, b, c, d = _quarter_round(a, b, c, d)
        a, b, c, d = _quarter_round(a, b.roll(-1, 0), c.roll(-2, 0), d.roll(-3, 0))
        b, c, d = b.roll(1, 0), c.roll(2, 0), d.roll(3, 0)
    return torch.cat([a, b, c, d])


def _quarter_round(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    a = a.add(b).bitwise_and_(_MASK)
    d = _rotate_left(d.bitwise_xor(a), 16)
    c = c.add(d).bitwise_and_(_MASK)
    b = _rotate_left(b.bitwise_xor(c), 12)
    a = a.add_(b).bitwise_and_(_MASK)
    d = _rotate_left(d.bitwise_xor_(a), 8)
    c = c.add_(d).bitwise_and_(_MASK)
    b = _rotate_left(b.bitwise_xor_(c), 7)
    return a, b, c, d


def _rotate_left(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x <<< bits for 32-bit words in int64 (``x`` is a temporary: rotated in place)."""
    low = x.bitwise_right_shift(32 - bits)
    return x.bitwise_left_shift_(bits).bitwise_and_(_MASK).bitwise_or_(low)


class ChaChaGaussianStream:
    """Standard normal float32 tensors on ``device`` from ChaCha20 + Box-Muller; never the same draw twice.
    The same public shape as `facesplit.noise.sampler.GaussianStream`."""

    def __init__(self, device: torch.device | str = "cpu", *,
                 seed_for_reproducible_evaluation: int | None = None, compiled: bool = False) -> None:
        self.device = torch.empty(0, device=device).device  # with its index: "cuda" -> cuda:0
        self._seed = seed_for_reproducible_evaluation
        self._keys_used = 0
        self._counter = 0  # the next unused block of the current key
        self._state = self._new_state()
        # one fused kernel instead of ~700 small ones: worth it on a GPU, where each op is a launch (static
        # shapes: one compile per batch shape; dynamic ones trip inductor's CPU code generation in torch 2.13)
        self._compiled = torch.compile(normals_from_keystream, dynamic=False) if compiled else None

    def _normals(self, states: torch.Tensor, count: int) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(states, count)
            except Exception as exc:  # no Triton or C compiler here (a slim image, a Jetson)
                # the failed call used none of the claimed blocks: the eager one below draws them, once
                log.warning("noise on %s runs uncompiled (%s: %s): slower, the same keystream", self.device,
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self._compiled = None
        return normals_from_keystream(states, count)

    def _new_state(self) -> torch.Tensor:
        self._keyed_in = os.getpid()
        if self._seed is None:
            key = os.urandom(32)
        else:  # a chain of keys from the seed, the next one at each re-key
            key = hashlib.sha256(f"frosted-eval-seed:chacha20:{self._seed}:{self._keys_used}".encode()).digest()
        self._keys_used += 1
        self._counter = 0
        return state_words(key, NONCE, self.device)

    def _claim(self, blocks: int) -> tuple[torch.Tensor, int]:
        """The state and first block counter for the next ``blocks`` blocks; a new key when the counter would
        wrap (the old key's last blocks are skipped: never a block twice)."""
        if blocks > COUNTER_LIMIT:
            raise ValueError(f"{blocks} blocks is more than one key's keystream")
        forked = os.getpid() != self._keyed_in and self._seed is None  # never the parent's keystream
        if forked or self._counter + blocks > COUNTER_LIMIT:
            self._state = self._new_state()
        first = self._counter
        self._counter += blocks
        return self._state, first

    def words(self, blocks: int) -> torch.Tensor:
        """The next ``blocks`` keystream blocks: (blocks, 16) int64 words."""
        return keystream_blocks(*self._claim(blocks), blocks)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        count = math.prod(shape)
        blocks = math.ceil(2 * ((count + 1) // 2) / BLOCK_WORDS)
        return self._normals(initial_states(*self._claim(blocks), blocks), count).view(shape)
