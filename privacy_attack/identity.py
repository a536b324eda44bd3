"""Identity metrics at a size where they mean something: identification among 100 and among everyone, and
verification (true accepts at 1 % false accepts), each with a 95 % Wilson interval.

Gallery: one clean photo per person (the attacker's reference picture of whom they look for). Queries: what
an attack made of that person's *other* photos. Rank-1 among a gallery of ``size`` people is the exact
expectation over every random gallery of that size holding the true person (no sampling of galleries): a
query whose true match is outscored by ``r`` of the other ``m - 1`` people is right in a random gallery of
``size`` with probability C(m - 1 - r, size - 1) / C(m - 1, size - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from privacy_attack.scoring import wilson_interval

GALLERY_SIZE = 100
FALSE_ACCEPT_RATE = 0.01


@dataclass(frozen=True)
class Scored:
    """A query set's similarity to every gallery person: ``scores`` (queries, people), higher = more alike,
    and each query's true person (a column index)."""

    scores: np.ndarray
    truth: np.ndarray

    def __post_init__(self) -> None:
        if self.scores.ndim != 2 or self.truth.shape != (self.scores.shape[0],):
            raise ValueError(f"scores must be (queries, people) and truth (queries,), got {self.scores.shape} "
                             f"and {self.truth.shape}")


def cosine_scores(queries: np.ndarray, gallery: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity after subtracting ``centre`` (e.g. the attacker set's mean descriptor: a regression
    shrinks towards the mean, so the direction carries the identity)."""
    if centre is not None:
        queries, gallery = queries - centre, gallery - centre
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return q @ g.T


def euclidean_scores(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Minus dlib's Euclidean distance (same person below 0.6): how dlib itself compares faces."""
    distances = np.sqrt(np.maximum(((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(axis=2), 0.0))
    return -distances


def outscored_by(scored: Scored) -> np.ndarray:
    """Per query, how many other people score above the true one (a tie counts half)."""
    true = scored.scores[np.arange(len(scored.truth)), scored.truth][:, None]
    above = (scored.scores > true).sum(axis=1)
    ties = (scored.scores == true).sum(axis=1) - 1
    return above + 0.5 * ties


def rank1_rates(scored: Scored, size: int) -> np.ndarray:
    """Per query, the chance of being named right among a random gallery of ``size`` people (all when
    ``size`` is at least the gallery's)."""
    people = scored.scores.shape[1]
    others = people - 1
    picks = min(size, people) - 1
    r = outscored_by(scored)
    if picks == others:
        return (r == 0).astype(np.float64)
    # C(others - r, picks) / C(others, picks), in logs; r is fractional on ties: gamma handles it
    free = others - r
    log_p = (gammaln(free + 1) - gammaln(free - picks + 1) - gammaln(others + 1) + gammaln(others - picks + 1))
    return np.where(free >= picks, np.exp(np.minimum(log_p, 0.0)), 0.0)


def _rate(values: np.ndarray, chance: float | None = None) -> dict:
    rate = float(values.mean()) if len(values) else 0.0
    out = {"rate": rate, "n": len(values), "ci95": wilson_interval(rate, len(values))}
    if chance is not None:
        out["chance"] = chance
    return out


def verification(scored: Scored, far: float = FALSE_ACCEPT_RATE) -> dict:
    """TAR at ``far``: the threshold that ``far`` of impostor pairs (a query and another person) exceed, and
    the share of genuine pairs (a query and its own person) above it."""
    queries = scored.scores.shape[0]
    genuine = scored.scores[np.arange(queries), scored.truth]
    mask = np.ones_like(scored.scores, dtype=bool)
    mask[np.arange(queries), scored.truth] = False
    impostor = scored.scores[mask]
    threshold = float(np.quantile(impostor, 1 - far)) if impostor.size else float("inf")
    out = _rate((genuine > threshold).astype(np.float64), chance=far)
    out.update({"far": far, "threshold": threshold, "impostor_pairs": int(impostor.size)})
    return out


def gallery_for(people: int, gallery_size: int = GALLERY_SIZE) -> int:
    """How many people a rank-1 gallery holds: ``gallery_size``, or everyone when there are fewer."""
    return min(gallery_size, people)


def identity_metrics(scored: Scored, gallery_size: int = GALLERY_SIZE, far: float = FALSE_ACCEPT_RATE) -> dict:
    """Rank-1 among ``gallery_size`` and among all people, and TAR at ``far``: JSON-able, with intervals."""
    people = scored.scores.shape[1]
    size = gallery_for(people, gallery_size)
    return {"queries": len(scored.truth), "people": people,
            f"rank1_{size}": _rate(rank1_rates(scored, size), chance=1 / size),
            "rank1_all": _rate(rank1_rates(scored, people), chance=1 / people),
            "tar_at_far": verification(scored, far)}


def split_gallery(identities: Sequence[str]) -> tuple[list[int], list[int], list[int]]:
    """Indices of the gallery photo (each person's first) and of the queries (their other photos), and each
    query's person as a gallery column. Only people with a second photo are kept."""
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for i, identity in enumerate(identities):
        first.setdefault(identity, i)
        counts[identity] = counts.get(identity, 0) + 1
    people = [identity for identity in first if counts[identity] > 1]
    column = {identity: c for c, identity in enumerate(people)}
    gallery = [first[identity] for identity in people]
    queries = [i for i, identity in enumerate(identities) if identity in column and first[identity] != i]
    return gallery, queries, [column[identities[i]] for i in queries]
