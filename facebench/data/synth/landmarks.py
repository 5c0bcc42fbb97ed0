"""Procedural face datasets written in the official 300-W and AFLW-Full on-disk formats.

Why: the real readers, preparation, PDB and training must run end to end without the licensed
datasets, so the stand-ins are written in exactly the layouts the readers expect
(datasets.md §1 and §2.2). The images come from the 3D face of ``face3d`` (faces.py): landmarks are exact
projections and sit on drawn structure, so a small CNN can learn them from the pixels.

Determinism: every image draws from its own ``default_rng([seed, folder, 1, index])``, JPEG/PNG
settings are fixed and the MAT-file header's timestamp is replaced, so one seed gives
byte-identical trees. Trees are written into a temporary folder beside ``root`` and renamed
into place only when complete.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import scipy.io

from facebench.atomic import replace_dir
from facebench.data.synth.faces import AFLW, CHALLENGING, COMMON, uniform
from facebench.data.synth.jobs import Job, run_jobs, seed_word, staging_dir

W300_REAL_COUNTS: dict[str, int] = {
    "afw": 337, "helen/trainset": 2000, "helen/testset": 330,
    "lfpw/trainset": 811, "lfpw/testset": 224, "ibug": 135,
}
W300_FOLDERS: tuple[str, ...] = tuple(W300_REAL_COUNTS)
AFLW_REAL_FACES, AFLW_REAL_TRAIN = 24386, 20000
AFLW_SUBFOLDERS = (0, 2, 3)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: facebench-synth"


def pts_text(landmarks: np.ndarray) -> str:
    """PTS version 1 with MATLAB 1-based coordinates (0-based pixel centre + 1)."""
    body = "".join(f"{x + 1:.6f} {y + 1:.6f}\n" for x, y in landmarks)
    return f"version: 1\nn_points:  {len(landmarks)}\n{{\n{body}}}\n"


def savemat_bytes(variables: dict) -> bytes:
    """``scipy.io.savemat`` output with the header's creation time replaced, so files are reproducible."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, format="5", oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def w300_counts(scale: float) -> dict[str, int]:
    """Per-folder face counts: the real 300-W counts times ``scale``, each at least 2."""
    return {k: max(2, int(round(v * scale))) for k, v in W300_REAL_COUNTS.items()}


def _w300_stems(folder: str, n: int, rng: np.random.Generator) -> list[str]:
    """File stems in each folder's real naming style; a few images 'hold two faces' (suffix _2)."""
    if folder.startswith("lfpw"):
        return [f"image_{i:04d}" for i in range(1, n + 1)]
    stems, used, k = [], set(), 1
    number = 0
    while len(stems) < n:
        if stems and k == 1 and rng.random() < 0.12:
            k = 2  # same picture number, second face
        else:
            k = 1
            if folder == "ibug":
                number += int(rng.integers(1, 4))
            else:
                number = int(rng.integers(10_000_000, 3_000_000_000))
                while number in used:
                    number = int(rng.integers(10_000_000, 3_000_000_000))
                used.add(number)
        stems.append(f"image_{number:03d}_{k}" if folder == "ibug" else f"{number}_{k}")
    return stems


def _gt_box(points: np.ndarray) -> np.ndarray:
    return np.array([*(points.min(axis=0) + 1.0), *(points.max(axis=0) + 1.0)])


def _detector_box(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A detector-like box: the GT box scaled up a little and shifted."""
    c = 0.5 * (gt[:2] + gt[2:])
    half = 0.5 * (gt[2:] - gt[:2]) * uniform(rng, 0.95, 1.15)
    c = c + rng.normal(0, 0.04, 2) * 2 * half
    return np.array([*(c - half), *(c + half)])


def synth_w300(root: Path, counts: dict[str, int], seed: int, image_size: int = 256) -> dict:
    """Write a 300-W tree under root (§1.1): images with .pts beside them plus the
    ``Bounding Boxes/bounding_boxes_<set>.mat`` files. ``counts`` maps each folder to a face count.

    The first afw .pts is written with CRLF line ends and the first ibug .pts without a final
    newline, so readers meet both variants. Returns counts written per folder.
    """
    root = Path(root)
    if set(counts) != set(W300_FOLDERS):
        raise ValueError(f"counts must have exactly the keys {list(W300_FOLDERS)}, got {sorted(counts)}")
    s = seed_word(seed)
    odd_files: dict[str, str] = {}
    tmp = staging_dir(root)
    try:
        jobs, files = [], []
        for code, folder in enumerate(W300_FOLDERS, start=1):
            ext = ".png" if folder.startswith("lfpw") else ".jpg"
            regime = CHALLENGING if folder == "ibug" else COMMON
            (tmp / folder).mkdir(parents=True)
            stems = _w300_stems(folder, counts[folder], np.random.default_rng([s, code, 0, 0]))
            for i, stem in enumerate(stems):
                jobs.append(Job((s, code, 1, i), regime, image_size, tmp / folder / f"{stem}{ext}", ext))
                files.append((code, folder, i, stem, ext))
        results = run_jobs(jobs, "w300")

        box_dir = tmp / "Bounding Boxes"
        box_dir.mkdir()
        records: dict[str, list[dict]] = {folder: [] for folder in W300_FOLDERS}
        box_rngs = {code: np.random.default_rng([s, code, 2, 0]) for code in range(1, len(W300_FOLDERS) + 1)}
        for (code, folder, i, stem, ext), (lm68, _, _) in zip(files, results):
            text = pts_text(lm68)
            if folder == "afw" and i == 0:
                text = text.replace("\n", "\r\n")
                odd_files["crlf_pts"] = f"{folder}/{stem}.pts"
            if folder == "ibug" and i == 0:
                text = text.rstrip("\n")
                odd_files["no_final_newline_pts"] = f"{folder}/{stem}.pts"
            (tmp / folder / f"{stem}.pts").write_bytes(text.encode("ascii"))
            gt = _gt_box(lm68)
            det = _detector_box(box_rngs[code], gt)
            records[folder].append({"imgName": f"{stem}{ext}", "bb_detector": det[None, :],
                                    "bb_ground_truth": gt[None, :]})
        for folder, recs in records.items():
            cell = np.empty((1, len(recs)), dtype=object)
            for i, rec in enumerate(recs):
                cell[0, i] = rec
            name = folder.replace("/", "_")
            (box_dir / f"bounding_boxes_{name}.mat").write_bytes(savemat_bytes({"bounding_boxes": cell}))
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"format": "w300", "root": str(root), "seed": int(seed), "image_size": image_size,
            "images": sum(counts.values()), "per_folder": dict(counts), **odd_files}


def aflw_square_box(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Square [left, right, top, bottom], 1-based, around the face: the side is the larger extent of
    the 68-point face (so about the face width when frontal), with a little jitter."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = float((hi - lo).max()) * uniform(rng, 0.98, 1.06)
    c = 0.5 * (lo + hi) + rng.normal(0, 0.015 * side, 2) + 1.0
    return np.array([c[0] - side / 2, c[0] + side / 2, c[1] - side / 2, c[1] + side / 2])


def synth_aflw(root: Path, n_faces: int, seed: int, image_size: int = 256, n_train: int | None = None) -> dict:
    """Write an AFLW-Full release (§2.2): root/AFLWinfo_release.mat and root/data/flickr/{0,2,3}/imageNNNNN.jpg.

    One face per image. ``ra[:n_train]`` (1-based, as in the release) are the training faces;
    n_train defaults to the real 20000/24386 share. The .mat does not carry n_train.
    """
    root = Path(root)
    if n_faces < 2 or n_faces > 99_000:
        raise ValueError(f"n_faces must be in [2, 99000] (5-digit AFLW file names), got {n_faces}")
    if n_train is None:
        n_train = round(n_faces * AFLW_REAL_TRAIN / AFLW_REAL_FACES)
    if not 0 <= n_train <= n_faces:
        raise ValueError(f"n_train must be in [0, {n_faces}], got {n_train}")
    s, code = seed_word(seed), 100
    meta_rng = np.random.default_rng([s, code, 0, 0])
    numbers = np.sort(meta_rng.choice(np.arange(2, 100_000), n_faces, replace=False))
    subs = meta_rng.choice(AFLW_SUBFOLDERS, n_faces, p=[0.45, 0.25, 0.30])
    names = [f"{sub}/image{num:05d}.jpg" for sub, num in zip(subs, numbers)]
    ra = meta_rng.permutation(n_faces) + 1
    box_rng = np.random.default_rng([s, code, 2, 0])

    tmp = staging_dir(root)
    try:
        flickr = tmp / "data" / "flickr"
        for sub in AFLW_SUBFOLDERS:
            (flickr / str(sub)).mkdir(parents=True)
        jobs = [Job((s, code, 1, i), AFLW, image_size, flickr / name, ".jpg") for i, name in enumerate(names)]
        results = run_jobs(jobs, "aflw")
        data = np.zeros((n_faces, 38))
        bbox = np.zeros((n_faces, 4))
        mask = np.zeros((n_faces, 19))
        for i, (lm68, a19, vis) in enumerate(results):
            data[i, :19] = a19[:, 0] + 1.0
            data[i, 19:] = a19[:, 1] + 1.0
            bbox[i] = aflw_square_box(lm68, box_rng)
            mask[i] = vis.astype(np.float64)
        name_cell = np.empty((n_faces, 1), dtype=object)
        for i, name in enumerate(names):
            name_cell[i, 0] = name
        mat = {"data": data, "bbox": bbox, "mask_new": mask, "ra": ra.astype(np.float64)[None, :],
               "nameList": name_cell}
        (tmp / "AFLWinfo_release.mat").write_bytes(savemat_bytes(mat))
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    test_idx = ra[n_train:] - 1
    return {"format": "aflw_full", "root": str(root), "seed": int(seed), "image_size": image_size,
            "faces": n_faces, "train": int(n_train), "test": int(n_faces - n_train),
            "test_frontal": int((mask[test_idx] == 1).all(axis=1).sum()),
            "per_subfolder": {str(k): int((subs == k).sum()) for k in AFLW_SUBFOLDERS},
            "invisible_points": int((mask == 0).sum())}
