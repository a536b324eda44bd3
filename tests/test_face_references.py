"""The face-SSIM references that know each face's colour and contrast, or its thumbnail, and not who it is."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from privacy_attack.face_references import colour_and_contrast_faces, face_statistics, thumbnail_faces


def faces_from(brightness: torch.Tensor, contrast: torch.Tensor, pattern: torch.Tensor, side: int) -> torch.Tensor:
    """Faces that are one shared pattern, each at its own per-channel brightness and contrast."""
    big = F.interpolate(pattern[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    faces = brightness[:, :, None, None] + contrast[:, :, None, None] * big[None]
    return faces.clamp(0, 255).round().to(torch.uint8)


def test_colour_and_contrast_recover_faces_that_differ_only_in_them_and_not_others() -> None:
    generator = torch.Generator().manual_seed(0)
    pattern = torch.randn(3, 32, 32, generator=generator)
    pattern = (pattern - pattern.mean((1, 2), keepdim=True)) / pattern.std((1, 2), keepdim=True)

    def draw(n: int, side: int) -> torch.Tensor:
        return faces_from(90 + 60 * torch.rand(n, 3, generator=generator),
                          5 + 10 * torch.rand(n, 3, generator=generator), pattern, side)

    attacker, victims = draw(400, 32), draw(50, 32)
    guessed = colour_and_contrast_faces(attacker, victims).double()
    truth = victims.double()
    assert (guessed - truth).abs().mean() < 2.0  # what the six numbers carry, they recover
    assert torch.allclose(face_statistics(guessed.to(torch.uint8))[:, :3], face_statistics(victims)[:, :3], atol=2.0)
    # faces whose pattern is their own: the six numbers cannot say where the features are
    others = torch.randint(0, 256, (50, 3, 112, 112), generator=generator, dtype=torch.uint8)
    guessed = colour_and_contrast_faces(attacker, others).double()
    truth = F.interpolate(others.double(), size=(32, 32), mode="area")
    assert (guessed - truth).abs().mean() > 10.0


def test_a_thumbnail_keeps_the_face_at_4x4_and_loses_finer_detail() -> None:
    generator = torch.Generator().manual_seed(2)
    blocks = 40 + 160 * torch.rand(20, 3, 4, 4, generator=generator, dtype=torch.float64)
    detail = 50 * (torch.rand(20, 3, 112, 112, generator=generator, dtype=torch.float64) - 0.5)
    faces = (F.interpolate(blocks, size=(112, 112), mode="nearest") + detail).round().to(torch.uint8)
    thumbnails = thumbnail_faces(faces)
    assert thumbnails.shape == faces.shape and thumbnails.dtype == torch.uint8
    kept = F.interpolate(thumbnails.double(), size=(4, 4), mode="area")
    assert torch.corrcoef(torch.stack([kept.flatten(), blocks.flatten()]))[0, 1] > 0.95

    def roughness(images: torch.Tensor) -> float:  # mean step between neighbouring pixels
        images = images.double()
        return float((images[..., 1:] - images[..., :-1]).abs().mean())

    assert roughness(thumbnails) < 0.2 * roughness(faces)  # the pixels' detail is gone


def test_each_scales_baselines_carry_the_references_beside_the_floors() -> None:
    """`at_scale.baselines` with the attacker's faces: both references are scored on every query, above the flat
    image, and the one that keeps each face's own thumbnail (its 8x8 detail lost) short of a perfect match."""
    from types import SimpleNamespace

    import numpy as np

    from privacy_attack.at_scale import ScaleConfig, Victims, baselines
    from privacy_attack.crops import CropSet

    generator = torch.Generator().manual_seed(3)
    n = 12
    layout = F.interpolate(torch.rand(1, 3, 4, 4, generator=generator, dtype=torch.float64) * 120, size=(112, 112),
                           mode="bilinear", align_corners=False)
    faces = (60 + layout + 60 * torch.rand(n, 3, 1, 1, generator=generator, dtype=torch.float64)
             + 40 * F.interpolate(torch.rand(n, 3, 8, 8, generator=generator, dtype=torch.float64), size=(112, 112),
                                  mode="bilinear", align_corners=False)).clamp(0, 255).round().to(torch.uint8)
    descriptors = np.random.default_rng(0).normal(size=(n, 128)) * 0.05
    queries = CropSet(torch.zeros(n, 8, 2, 2).half(), torch.zeros(n, 2, dtype=torch.int64),
                      torch.from_numpy(descriptors).float(), [str(i) for i in range(n)], (32, 32), faces,
                      torch.full((n, 3), 128.0), torch.from_numpy(descriptors).float())
    victims = Victims(descriptors.copy(), [str(i) for i in range(n)],
                      [SimpleNamespace(descriptor=d) for d in descriptors], np.arange(n))  # type: ignore[misc]
    attacker = F.interpolate(faces.double(), size=(32, 32), mode="area").round().to(torch.uint8).repeat(4, 1, 1, 1)
    template = np.ascontiguousarray(faces.double().mean(0).permute(1, 2, 0).round().to(torch.uint8).numpy())
    found = baselines(queries, victims, template, ScaleConfig(floor_queries=4), attacker)
    colour, thumbnail = found["knowing_colour_and_contrast"], found["knowing_a_4x4_thumbnail"]
    assert colour["faces"] == thumbnail["faces"] == n
    assert found["flat"]["face_ssim"] < min(colour["face_ssim"], thumbnail["face_ssim"])
    assert thumbnail["face_ssim"] < 0.99
