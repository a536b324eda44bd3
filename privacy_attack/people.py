"""Who is attacked and with what: folders of victims (``<person>/<photo>.jpg``) and of the attacker's faces.

A victims folder names each person by its sub-folder, so a site can measure its own people by laying their
photos out that way. An attacker folder is any tree of face photos (each its own identity: the attacker needs
no labels, only faces). Photos are listed here and read when used: 13,744 attacker faces are 1.6 GB decoded.

The attacker must never train on a victim: `check_disjoint` refuses an attacker set that shares a person
(by LFW's ``<Name>_<NNNN>`` file naming) or an identical photo (by content) with the victims.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from facesplit.errors import FrostedError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# LFW names each photo after its person: "George_W_Bush_0004.jpg"
LFW_NAME = re.compile(r"^(?P<person>.+)_\d{4}$")


class PeopleError(FrostedError):
    """A victims or attacker folder that is missing, empty or laid out wrongly, or sets that overlap."""


@dataclass(frozen=True)
class FacePhoto:
    """One photo on disk and the person it shows (for an attacker's face, the file itself)."""

    path: Path
    identity: str

    @property
    def key(self) -> str:
        """A short stable name: ``<parent folder>/<file>``."""
        return f"{self.path.parent.name}/{self.path.name}"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _existing_folder(folder: Path, what: str) -> Path:
    if not folder.exists():
        raise PeopleError(f"{folder}: {what} folder not found")
    if not folder.is_dir():
        raise PeopleError(f"{folder}: {what} must be a folder, not a file")
    return folder


def read_people(folder: Path, min_photos: int = 2) -> list[FacePhoto]:
    """Every photo of every person in ``folder``, one sub-folder per person (its name is the identity), sorted.
    People with fewer than ``min_photos`` photos are left out: identification needs one photo for the gallery
    and another to query with."""
    _existing_folder(folder, "victims")
    people = [p for p in sorted(folder.iterdir()) if p.is_dir()]
    photos = []
    for person in people:  # each folder listed once: a person with thousands of photos is no slower to read
        if len(found := _images(person)) >= min_photos:
            photos += [FacePhoto(path, person.name) for path in found]
    if not photos:
        loose = len(_images(folder))
        hint = f" (it holds {loose} loose photos: put each person's photos in a folder named after them)" \
            if loose else ""
        raise PeopleError(f"{folder}: no person with {min_photos} or more photos in a <person>/<photo>.jpg "
                          f"layout{hint}")
    return photos


def read_faces(folders: Sequence[Path], min_photos: int = 1) -> list[FacePhoto]:
    """Every photo under each of ``folders`` (recursively, sorted), each its own identity; at least
    ``min_photos`` of them (an attacker's probe learns from many: with one its solver has nothing to solve)."""
    if not folders:
        raise PeopleError("no attacker folder given")
    photos = []
    for folder in folders:
        _existing_folder(folder, "attacker")
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise PeopleError(f"{folder}: no photos (.jpg, .jpeg, .png, .bmp) in the attacker folder")
        photos += [FacePhoto(p, f"{folder.name}/{p.relative_to(folder)}") for p in found]
    if len(photos) < min_photos:
        raise PeopleError(f"{', '.join(map(str, folders))}: {len(photos)} photo(s); an attacker learns from at "
                          f"least {min_photos}")
    return photos


ATTACKER_MIN_PHOTOS = 2  # a probe's floor: below it, its ridge system is singular


def lfw_person(path: Path) -> str | None:
    """The person an LFW-named file shows (``Aaron_Eckhart_0001.jpg`` -> ``Aaron_Eckhart``), else None."""
    match = LFW_NAME.match(path.stem)
    return match["person"] if match else None


def content_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_disjoint(victims: Iterable[FacePhoto], attacker: Iterable[FacePhoto]) -> None:
    """Raise if the attacker's faces include a victim: a person of the same name (a victim's identity, or the
    LFW person in a victim's file name) or a byte-identical photo. An attack trained on its victims would
    measure memory, not leakage."""
    victims, attacker = list(victims), list(attacker)
    names = {v.identity for v in victims} | {n for v in victims if (n := lfw_person(v.path))}
    shared_names = sorted({n for a in attacker if (n := lfw_person(a.path)) in names})
    if shared_names:
        raise PeopleError(f"the attacker's faces include {len(shared_names)} victim(s), e.g. {shared_names[0]}: "
                          "an attacker must not train on the people it is scored on")
    victim_digests = {content_digest(v.path): v for v in victims}
    for a in attacker:
        twin = victim_digests.get(content_digest(a.path))
        if twin is not None:
            raise PeopleError(f"{a.path} is the same photo as the victim {twin.path}: an attacker must not "
                              "train on the people it is scored on")
