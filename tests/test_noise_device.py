"""The device-side sampler (`facesplit.noise.chacha`): RFC 8439's keystream, never a block twice, standard normal
per element; on the CPU here, and the same checks on a CUDA device where there is one."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

from facesplit.noise.chacha import COUNTER_LIMIT, NONCE, ChaChaGaussianStream, chacha20_blocks
from facesplit.noise.profile import Obfuscator
from facesplit.noise.sampler import GaussianStream
from facesplit.noise.streams import gaussian_stream
from tests.test_noise import make_profile

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU machine")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # hundreds of small integer ops
FRAME = (1, 128, 18, 32)  # inception3's activation at 1024x576, the default profile's

RFC_KEY = bytes(range(32))
# RFC 8439 section 2.3.2: the block function's serialized output for this key, nonce and block counter 1
RFC_BLOCK_NONCE = bytes.fromhex("000000090000004a00000000")
RFC_BLOCK = bytes.fromhex(
    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
# section 2.4.2: encryption from block counter 1
RFC_ENCRYPTION_NONCE = bytes.fromhex("000000000000004a00000000")
RFC_PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
                 b"sunscreen would be it.")
RFC_CIPHERTEXT = bytes.fromhex(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
    "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
    "5af90bbf74a35be6b40b8eedf2785e42874d")


def keystream_bytes(words: torch.Tensor) -> bytes:
    """(blocks, 16) words -> the keystream's bytes (each word little-endian, as RFC 8439 serializes them)."""
    return words.cpu().numpy().astype("<u4").tobytes()


def openssl_keystream(key: bytes, nonce: bytes, counter: int, blocks: int) -> bytes:
    """`cryptography`'s ChaCha20 (OpenSSL): its 16-byte nonce is the 4-byte little-endian counter + RFC's nonce."""
    cipher = Cipher(algorithms.ChaCha20(key, counter.to_bytes(4, "little") + nonce), mode=None)
    return cipher.encryptor().update(bytes(64 * blocks))


@pytest.mark.parametrize("device", DEVICES)
def test_keystream_equals_rfc8439_test_vectors(device: str) -> None:
    assert keystream_bytes(chacha20_blocks(RFC_KEY, RFC_BLOCK_NONCE, 1, 1, device)) == RFC_BLOCK
    stream = keystream_bytes(chacha20_blocks(RFC_KEY, RFC_ENCRYPTION_NONCE, 1, 2, device))
    encrypted = bytes(p ^ k for p, k in zip(RFC_PLAINTEXT, stream, strict=False))
    assert encrypted == RFC_CIPHERTEXT


@pytest.mark.parametrize("device", DEVICES)
def test_keystream_equals_openssl_on_random_keys_up_to_the_counter_limit(device: str) -> None:
    for counter in (0, 1, 1000, 1 << 31, COUNTER_LIMIT - 5):  # the last run ends on the counter's last block
        key, nonce = os.urandom(32), os.urandom(12)
        ours = keystream_bytes(chacha20_blocks(key, nonce, counter, 5, device))
        assert ours == openssl_keystream(key, nonce, counter, 5), counter
    # past the last block, both refuse rather than wrap the 32-bit counter onto block 0
    with pytest.raises(ValueError, match="32-bit counter"):
        chacha20_blocks(key, nonce, COUNTER_LIMIT - 1, 2, device)
    with pytest.raises(ValueError, match="overflow"):
        openssl_keystream(key, nonce, COUNTER_LIMIT - 1, 2)


def test_a_counter_about_to_wrap_takes_a_new_key() -> None:
    stream = ChaChaGaussianStream(seed_for_reproducible_evaluation=4)
    first_key = chacha20_blocks(_seeded_key(4, 0), NONCE, 0, 3)
    assert torch.equal(stream.words(3), first_key)
    stream._counter = COUNTER_LIMIT - 2  # as if 2^32 - 2 blocks had been drawn: too long to really draw
    assert torch.equal(stream.words(2), chacha20_blocks(_seeded_key(4, 0), NONCE, COUNTER_LIMIT - 2, 2))
    # the next draw would wrap: it comes from the next key, from its block 0, and the counter goes on from there
    assert torch.equal(stream.words(3), chacha20_blocks(_seeded_key(4, 1), NONCE, 0, 3))
    assert torch.equal(stream.words(1), chacha20_blocks(_seeded_key(4, 1), NONCE, 3, 1))
    # a draw that does not fit what is left of the key skips the rest: still never a block twice
    stream._counter = COUNTER_LIMIT - 2
    assert torch.equal(stream.words(4), chacha20_blocks(_seeded_key(4, 2), NONCE, 0, 4))
    unseeded = ChaChaGaussianStream()
    before = unseeded._state.clone()
    unseeded._counter = COUNTER_LIMIT - 1
    unseeded.words(2)
    assert not torch.equal(unseeded._state, before) and unseeded._counter == 2


def _seeded_key(seed: int, generation: int) -> bytes:
    import hashlib

    return hashlib.sha256(f"frosted-eval-seed:chacha20:{seed}:{generation}".encode()).digest()


@pytest.mark.parametrize("device", DEVICES)
def test_consecutive_frames_never_share_noise(device: str) -> None:
    profile = make_profile("x" * 64, shape=FRAME[1:])
    obfuscate = Obfuscator(profile, gaussian_stream(device))
    activation = torch.zeros(FRAME, device=device).contiguous(memory_format=torch.channels_last)
    frames = [obfuscate(activation) for _ in range(30)]
    assert frames[0].device == activation.device and frames[0].shape == FRAME
    for a, b in itertools.pairwise(frames):
        assert (a == b).float().mean() < 1e-3  # not even a shared block of noise
    # two streams started the same way still draw different noise: the key comes from os.urandom
    assert not torch.equal(ChaChaGaussianStream(device).normal((1000,)), ChaChaGaussianStream(device).normal((1000,)))


@pytest.mark.parametrize("device", DEVICES)
def test_only_an_explicit_seed_reproduces_noise(device: str) -> None:
    a = ChaChaGaussianStream(device, seed_for_reproducible_evaluation=7).normal((4096,))
    assert torch.equal(a, ChaChaGaussianStream(device, seed_for_reproducible_evaluation=7).normal((4096,)))
    assert not torch.equal(a, ChaChaGaussianStream(device, seed_for_reproducible_evaluation=8).normal((4096,)))
    with pytest.raises(TypeError):
        ChaChaGaussianStream(device, 7)  # type: ignore[misc]  # a seed is never positional


@pytest.mark.parametrize("device", DEVICES)
def test_noise_is_standard_normal(device: str) -> None:
    stream = ChaChaGaussianStream(device)
    sample = stream.normal((200_000,))
    assert sample.device == stream.device and sample.dtype == torch.float32
    values = sample.cpu().numpy()
    assert stats.kstest(values, "norm").pvalue > 1e-4
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01  # as test_noise's: 4.5 standard errors
    assert stream.normal((3, 5, 7)).shape == (3, 5, 7)  # odd sizes keep their shape
    # uniforms on (0, 1]: log() finite, so never an infinite or NaN normal
    assert torch.isfinite(stream.normal((1, 128, 32, 32))).all()


@pytest.mark.parametrize("device", DEVICES)
def test_each_element_is_standard_normal_and_applied_noise_matches_mu_and_sigma(device: str) -> None:
    draws = 4000  # frames, drawn as one batch: a row per frame, from one keystream as frame after frame would be
    eps = ChaChaGaussianStream(device).normal((draws, 4, 3, 5)).cpu()
    # 5 standard errors per element: with 60 elements a 3-s.e. bound would fail one run in six
    assert eps.mean(0).abs().max() < 5 / np.sqrt(draws)
    assert torch.allclose(eps.std(0), torch.ones(4, 3, 5), atol=0.08)  # as test_noise's (~7 s.e.)
    profile = make_profile("x" * 64, shape=(4, 3, 5))
    activation = torch.rand(1, 4, 3, 5)
    obfuscate = Obfuscator(profile, ChaChaGaussianStream(device))
    applied = obfuscate(activation.expand(draws, 4, 3, 5)).cpu() - activation  # moved to the device and back
    assert torch.allclose(applied.mean(0), profile.mu, atol=4 * profile.sigma.max().item() / np.sqrt(draws))
    assert torch.allclose(applied.std(0) / profile.sigma, torch.ones(4, 3, 5), atol=0.08)


def test_a_compiler_that_cannot_run_falls_back_to_the_same_keystream_uncompiled(caplog) -> None:
    """A host with CUDA but no Triton (or no C compiler) cannot compile the kernel: the draw goes on uncompiled,
    with the blocks it had claimed, once, and says so once."""
    broken = ChaChaGaussianStream(seed_for_reproducible_evaluation=5, compiled=True)
    calls = []

    def no_triton(*args: object) -> torch.Tensor:
        calls.append(args)
        raise RuntimeError("Cannot find a working triton installation.\nMore information ...")

    broken._compiled = no_triton  # what torch.compile's first call raises without Triton
    eager = ChaChaGaussianStream(seed_for_reproducible_evaluation=5)
    with caplog.at_level("WARNING", logger="facesplit.noise.chacha"):
        first, second = broken.normal(FRAME), broken.normal(FRAME)
    assert torch.equal(first, eager.normal(FRAME)) and torch.equal(second, eager.normal(FRAME))
    assert not torch.equal(first, second) and len(calls) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "noise on cpu runs uncompiled (RuntimeError: Cannot find a working triton installation.): slower, the "
        "same keystream"]


@pytest.mark.parametrize("stream_type", [GaussianStream, ChaChaGaussianStream])
def test_a_forked_process_never_draws_its_parents_noise(stream_type) -> None:
    """A worker forked from a process holding a stream (multiprocessing, a notebook's pool) takes a fresh key: with
    its parent's keystream, the same noise would go on two frames, and their difference would cancel it."""
    import multiprocessing

    from tests.waiting import DEADLINE

    stream = stream_type()
    stream.normal((1000,))  # keyed and drawn from in the parent
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=lambda: writer.send(stream.normal((1000,)).numpy().tobytes()))
    child.start()
    try:
        assert reader.poll(DEADLINE), "the forked child's draw"
        in_child = torch.from_numpy(np.frombuffer(reader.recv(), np.float32).copy())
    finally:
        child.join(DEADLINE)
    in_parent = stream.normal((1000,))  # the blocks the child would have drawn with its parent's key
    assert child.exitcode == 0 and not torch.equal(in_child, in_parent)
    assert (in_child == in_parent).float().mean() < 1e-2
    assert stats.kstest(in_child.numpy(), "norm").pvalue > 1e-4  # still standard normal


def test_the_cpu_keeps_the_aes_sampler_and_its_numbers() -> None:
    chosen = gaussian_stream("cpu", seed_for_reproducible_evaluation=3)
    assert isinstance(chosen, GaussianStream)
    assert torch.equal(chosen.normal(FRAME), GaussianStream(seed_for_reproducible_evaluation=3).normal(FRAME))


@CUDA
def test_cuda_draws_the_cpu_keystream_bit_for_bit() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    assert torch.equal(chacha20_blocks(key, nonce, 9, 4096, "cuda").cpu(), chacha20_blocks(key, nonce, 9, 4096))
    on_gpu = gaussian_stream("cuda", seed_for_reproducible_evaluation=1)  # compiled: the product's CUDA path
    assert isinstance(on_gpu, ChaChaGaussianStream) and on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.words(8).cpu(), chacha20_blocks(_seeded_key(1, 0), NONCE, 0, 8))
    on_gpu = gaussian_stream("cuda", seed_for_reproducible_evaluation=1)
    on_cpu = ChaChaGaussianStream(seed_for_reproducible_evaluation=1)
    for shape in (FRAME, (32, 128, 18, 32)):
        # the same words; only log/sin/cos may differ in the last bits between the CPU and the GPU
        assert torch.allclose(on_gpu.normal(shape).cpu(), on_cpu.normal(shape), atol=1e-5)
