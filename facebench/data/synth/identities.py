"""Procedural identities written in the CASIA-WebFace and LFW layouts (recognition, CosFace paper).

Why: face identification needs many images per identity that a network can tell apart, and
verification needs people it has never seen. An identity here is a face shape and its colours
(``synth.Person``); each image redraws pose, expression, light, gaze, background, occluder and
blur, so what stays constant within an identity is the face itself.

Layouts (datasets.md §3 and §4), read by ``formats/casia.py`` and ``formats/lfw.py``:
* CASIA-WebFace: ``<root>/<7-digit id>/<NNN>.jpg`` and ``casia_landmark.txt``
  (``path<TAB>label<TAB>x1<TAB>y1 ... y5``, integer pixels, label = sorted folder order);
* LFW: ``<root>/<Name>/<Name>_<NNNN>.jpg``, View 2 ``pairs.txt`` (folds of matched then mismatched
  pairs, each fold's people its own, as in LFW) and ``lfw_landmark.txt`` (``path<TAB>x1 ... y5``).

The five points are the eye centres (means of the eye contours), the nose tip and the mouth corners
of the 68-point annotation, image-left first. LFW people draw from a separate seed stream, so they
never repeat a CASIA identity. Trees are written beside ``root`` and renamed into place when whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facebench.atomic import build_dir
from facebench.data.formats.casia import LFW_OVERLAP_IDS
from facebench.data.formats.lfw import lfw_image
from facebench.data.synth.faces import Regime
from facebench.data.synth.jobs import Job, run_jobs, seed_word

# Web photos of people: mostly near frontal, some profile, little occlusion, faces filling the frame
# (CASIA and LFW images are 250x250 crops around a detected face).
PORTRAIT = Regime(0.75, 60.0, 12.0, 15.0, 0.05, 0.6, 0.9, (0.42, 0.56))
IMAGE_SIZE = 250
_CASIA_STREAM, _LFW_STREAM = 11, 12  # seed streams: CASIA and LFW people never coincide


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2): image-left eye centre, image-right eye centre, nose tip, mouth corners."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def _points_text(points: np.ndarray) -> str:
    return "\t".join(str(int(round(v))) for v in np.asarray(points).reshape(-1))


def _render(tmp: Path, jobs: list[tuple[str, tuple[int, ...], tuple[int, ...]]], image_size: int,
            label: str) -> list[np.ndarray]:
    """Render (relative path, image seed, person seed) jobs under ``tmp``; the 68 points of each."""
    work = [Job(seed, PORTRAIT, image_size, tmp / rel, ".jpg", person_seed=person) for rel, seed, person in jobs]
    return [lm68 for lm68, _, _ in run_jobs(work, label)]


def casia_ids(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct 7-digit folder names in sorted order, none of the three that overlap LFW."""
    ids: set[str] = set()
    while len(ids) < n:
        candidate = f"{int(rng.integers(1, 10**7)):07d}"
        if candidate not in LFW_OVERLAP_IDS:
            ids.add(candidate)
    return sorted(ids)


def synth_casia(root: Path, n_identities: int, images_per_identity: tuple[int, int], seed: int,
                image_size: int = IMAGE_SIZE) -> dict:
    """A CASIA-WebFace tree of ``n_identities`` people with ``images_per_identity`` (min, max) images each."""
    lo, hi = images_per_identity
    if n_identities < 1 or not 1 <= lo <= hi:
        raise ValueError(f"need n_identities >= 1 and 1 <= min <= max images, got {n_identities}, {lo}..{hi}")
    root = Path(root)
    s = seed_word(seed)
    rng = np.random.default_rng([s, _CASIA_STREAM, 0])
    ids = casia_ids(n_identities, rng)
    counts = [int(rng.integers(lo, hi + 1)) for _ in ids]
    jobs, rows = [], []
    for label, (folder, count) in enumerate(zip(ids, counts)):
        for k in range(count):
            rel = f"{folder}/{k + 1:03d}.jpg"
            jobs.append((rel, (s, _CASIA_STREAM, 1, label, k), (s, _CASIA_STREAM, 2, label)))
            rows.append((rel, label))

    def write(tmp: Path) -> None:
        for folder in ids:
            (tmp / folder).mkdir()
        results = _render(tmp, jobs, image_size, "casia")
        lines = [f"{rel}\t{label}\t{_points_text(five_points(lm68))}" for (rel, label), lm68 in zip(rows, results)]
        (tmp / "casia_landmark.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    build_dir(root, write)
    return {"format": "casia", "root": str(root), "seed": int(seed), "image_size": image_size,
            "identities": n_identities, "images": len(jobs)}


def synth_lfw(root: Path, folds: int, pairs_per_fold: int, people_per_fold: int, seed: int,
              image_size: int = IMAGE_SIZE) -> dict:
    """An LFW tree with View 2 ``pairs.txt``: ``folds`` blocks of ``pairs_per_fold`` matched then as many
    mismatched pairs; each fold's pairs use only that fold's ``people_per_fold`` people."""
    if folds < 1 or pairs_per_fold < 1 or people_per_fold < 2:
        raise ValueError(f"need folds >= 1, pairs_per_fold >= 1 and people_per_fold >= 2, got "
                         f"{folds}, {pairs_per_fold}, {people_per_fold}")
    root = Path(root)
    s = seed_word(seed)
    rng = np.random.default_rng([s, _LFW_STREAM, 0])
    people: list[tuple[str, int]] = []  # (name, image count)
    pair_lines: list[str] = [f"{folds}\t{pairs_per_fold}"]
    for fold in range(folds):
        names = [f"Person_{fold * people_per_fold + i + 1:05d}" for i in range(people_per_fold)]
        count = {name: 1 for name in names}
        matched, mismatched = [], []
        for _ in range(pairs_per_fold):
            name = names[int(rng.integers(len(names)))]
            a = int(rng.integers(1, count[name] + 2))  # an existing image or the next new one
            count[name] = max(count[name], a)
            b = int(rng.integers(1, count[name] + 2))
            while b == a:
                b = int(rng.integers(1, count[name] + 2))
            count[name] = max(count[name], b)
            matched.append(f"{name}\t{a}\t{b}")
        for _ in range(pairs_per_fold):
            i, j = rng.choice(len(names), size=2, replace=False)
            n1, n2 = names[int(i)], names[int(j)]
            mismatched.append(f"{n1}\t{int(rng.integers(1, count[n1] + 1))}\t{n2}\t{int(rng.integers(1, count[n2] + 1))}")
        pair_lines += matched + mismatched
        people += [(name, count[name]) for name in names]
    jobs = [(lfw_image(name, k), (s, _LFW_STREAM, 1, p, k), (s, _LFW_STREAM, 2, p))
            for p, (name, count) in enumerate(people) for k in range(1, count + 1)]

    def write(tmp: Path) -> None:
        for name, _ in people:
            (tmp / name).mkdir()
        results = _render(tmp, jobs, image_size, "lfw")
        (tmp / "pairs.txt").write_text("\n".join(pair_lines) + "\n", encoding="utf-8")
        lines = [f"{rel}\t{_points_text(five_points(lm68))}" for (rel, _, _), lm68 in zip(jobs, results)]
        (tmp / "lfw_landmark.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    build_dir(root, write)
    return {"format": "lfw", "root": str(root), "seed": int(seed), "image_size": image_size,
            "people": len(people), "images": len(jobs), "pairs": 2 * folds * pairs_per_fold}
