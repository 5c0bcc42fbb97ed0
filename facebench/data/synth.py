"""Procedural face datasets written in the official 300-W and AFLW-Full on-disk formats.

Why: the real readers, preparation, PDB and training must run end to end without the licensed
datasets, so the stand-ins are written in exactly the layouts the readers expect
(datasets.md §1 and §2.2). The images come from the 3D face of ``face3d``: landmarks are exact
projections and sit on drawn structure, so a small CNN can learn them from the pixels.

Determinism: every image draws from its own ``default_rng([seed, folder, 1, index])``, JPEG/PNG
settings are fixed and the MAT-file header's timestamp is replaced, so one seed gives
byte-identical trees. Trees are written into a temporary folder beside ``root`` and renamed
into place only when complete.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from facebench.atomic import replace_dir
from facebench.data import face3d
from facebench.data.face3d import Expression, FaceShape, Identity, Pose, Style

W300_REAL_COUNTS: dict[str, int] = {
    "afw": 337, "helen/trainset": 2000, "helen/testset": 330,
    "lfpw/trainset": 811, "lfpw/testset": 224, "ibug": 135,
}
W300_FOLDERS: tuple[str, ...] = tuple(W300_REAL_COUNTS)
AFLW_REAL_FACES, AFLW_REAL_TRAIN = 24386, 20000
AFLW_SUBFOLDERS = (0, 2, 3)

JPEG_QUALITY = 92
PNG_COMPRESSION = 1
PROGRESS_EVERY = 500
VISIBLE_FACING = 0.2  # an AFLW point turned further than ~78 degrees from the camera is hidden
PARALLEL_FROM = 300  # images; smaller sets render in-process
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: facebench-synth"


# ----------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Regime:
    """How hard the faces of one folder are: pose spread, occluders, expression, degradation."""

    frontal_share: float  # share of faces with |yaw| < 25 degrees
    yaw_tail: float  # largest |yaw| of the rest
    pitch: float
    roll: float
    occluder_p: float
    expression: float
    degrade: float
    face_width: tuple[float, float]  # face width as a fraction of the image side


COMMON = Regime(0.8, 70.0, 15.0, 20.0, 0.08, 0.6, 1.0, (0.36, 0.54))
CHALLENGING = Regime(0.45, 75.0, 25.0, 35.0, 0.6, 1.0, 1.6, (0.36, 0.54))
AFLW = Regime(0.45, 80.0, 20.0, 30.0, 0.15, 0.7, 1.0, (0.32, 0.52))


@dataclass(frozen=True)
class Scene:
    """Everything random about one image; ``render_scene`` turns it into pixels deterministically."""

    identity: Identity
    expression: Expression
    pose: Pose
    style: Style
    occluder: bool
    pixel_seed: int  # background, occluder and degradation draws
    degrade: float


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    landmarks68: np.ndarray  # (68, 2) 0-based pixel centres
    aflw19: np.ndarray  # (19, 2)
    visible19: np.ndarray  # (19,) bool: facing the camera, not behind the nose, not under an occluder
    pose: Pose


_SKIN_TONES = np.array([  # BGR, light to dark
    [196, 210, 238], [150, 176, 222], [110, 142, 192], [72, 102, 150], [45, 64, 100]], np.float64)
_HAIR = np.array([[25, 25, 30], [35, 45, 70], [60, 90, 140], [120, 170, 205], [150, 150, 155], [40, 70, 150]])
_IRIS = np.array([[30, 50, 80], [20, 30, 45], [140, 110, 60], [90, 120, 70]])


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_identity(rng: np.random.Generator) -> Identity:
    return Identity(
        face_width=_u(rng, 0.9, 1.1), face_height=_u(rng, 0.9, 1.12), jaw_power=_u(rng, 1.8, 2.8),
        forehead_height=_u(rng, 0.9, 1.1), eye_spacing=_u(rng, 0.92, 1.08), eye_size=_u(rng, 0.85, 1.15),
        eye_open=_u(rng, 0.75, 1.3), brow_height=_u(rng, -0.05, 0.05), brow_arch=_u(rng, -0.03, 0.05),
        nose_length=_u(rng, 0.88, 1.12), nose_width=_u(rng, 0.85, 1.2), nose_depth=_u(rng, 0.8, 1.2),
        mouth_width=_u(rng, 0.85, 1.15), mouth_y=_u(rng, -0.04, 0.04), lip_thickness=_u(rng, 0.7, 1.3),
        hair_length=_u(rng, -0.3, 1.6))


def sample_expression(rng: np.random.Generator, strength: float) -> Expression:
    mouth = _u(rng, 0.15, 1.0) * strength if rng.random() < 0.35 else _u(rng, 0.0, 0.08)
    eyes = _u(rng, 0.1, 0.5) if rng.random() < 0.05 else _u(rng, 0.8, 1.15)
    return Expression(mouth_open=mouth, smile=_u(rng, -0.3, 1.0) * strength,
                      brow_raise=_u(rng, -0.5, 1.0) * strength, eyes_open=eyes)


def sample_pose(rng: np.random.Generator, regime: Regime, size: int) -> Pose:
    """Yaw is a mixture: mostly near frontal, with a long tail to ``regime.yaw_tail``."""
    if rng.random() < regime.frontal_share:
        yaw = float(np.clip(rng.normal(0.0, 10.0), -25.0, 25.0))
    else:
        yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(20.0, regime.yaw_tail))
    pitch = float(np.clip(rng.normal(0.0, regime.pitch / 2), -regime.pitch, regime.pitch))
    roll = float(np.clip(rng.normal(0.0, regime.roll / 2), -regime.roll, regime.roll))
    scale = _u(rng, *regime.face_width) * size / 2.0  # the face is 2 model units wide
    centre = (size - 1) / 2.0
    return Pose(yaw, pitch, roll, scale, centre + _u(rng, -0.1, 0.1) * size, centre + _u(rng, -0.08, 0.08) * size)


def sample_style(rng: np.random.Generator) -> Style:
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    k = min(int(t), len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[k] + (t - k) * (_SKIN_TONES[k + 1] - _SKIN_TONES[k]) + rng.uniform(-8, 8, 3)
    lips = np.clip(skin * np.array([0.72, 0.68, 0.92]) + np.array([0, 0, 18]) + rng.uniform(-10, 10, 3), 0, 255)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.uniform(-12, 12, 3)
    brows = np.clip(np.minimum(hair, skin * 0.55) * _u(rng, 0.7, 1.0), 0, 255)
    iris = _IRIS[rng.integers(len(_IRIS))] + rng.uniform(-10, 10, 3)
    light = (_u(rng, -0.8, 0.8), _u(rng, -0.7, 0.3), _u(rng, 0.5, 1.0))
    tup = lambda a: tuple(float(v) for v in np.clip(a, 0, 255))  # noqa: E731
    return Style(skin=tup(skin), lips=tup(lips), hair=tup(hair), brows=tup(brows), iris=tup(iris), light=light,
                 ambient=_u(rng, 0.35, 0.7), has_hair=bool(rng.random() < 0.9),
                 gaze=(_u(rng, -0.12, 0.12), _u(rng, -0.05, 0.05)))


def sample_scene(rng: np.random.Generator, regime: Regime, size: int) -> Scene:
    """Draw one face, then shrink/recentre it until all 68 landmarks are inside the image."""
    style = sample_style(rng)
    identity = sample_identity(rng)
    if not style.has_hair:
        identity = replace(identity, hair_length=-0.4)  # a bare skull, no hair beside the face
    expression = sample_expression(rng, regime.expression)
    pose = _fit_in_image(face3d.face_shape(identity, expression), sample_pose(rng, regime, size), size)
    return Scene(identity, expression, pose, style, bool(rng.random() < regime.occluder_p),
                 int(rng.integers(2**62)), regime.degrade)


def _fit_in_image(shape: FaceShape, pose: Pose, size: int) -> Pose:
    """Shrink and recentre the pose until all 68 landmarks are inside the image."""
    centre = (size - 1) / 2.0
    for _ in range(30):
        pts, _ = face3d.project(shape.landmarks, pose)
        if pts.min() >= 2.0 and pts.max() <= size - 3.0:
            break
        pose = replace(pose, scale=pose.scale * 0.95, cx=centre + 0.8 * (pose.cx - centre),
                       cy=centre + 0.8 * (pose.cy - centre))
    return pose


@dataclass(frozen=True)
class Person:
    """What stays the same across one identity's images: the face's shape and its colours."""

    identity: Identity
    style: Style


def sample_person(rng: np.random.Generator) -> Person:
    style = sample_style(rng)
    identity = sample_identity(rng)
    if not style.has_hair:
        identity = replace(identity, hair_length=-0.4)
    return Person(identity, style)


def sample_person_scene(rng: np.random.Generator, person: Person, regime: Regime, size: int) -> Scene:
    """One image of ``person``: pose, expression, light, gaze, background, occluder and blur drawn anew."""
    other = sample_style(rng)
    style = replace(person.style, light=other.light, ambient=other.ambient, gaze=other.gaze)
    expression = sample_expression(rng, regime.expression)
    pose = _fit_in_image(face3d.face_shape(person.identity, expression), sample_pose(rng, regime, size), size)
    return Scene(person.identity, expression, pose, style, bool(rng.random() < regime.occluder_p),
                 int(rng.integers(2**62)), regime.degrade)


# ----------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour gradient, low-frequency blotches and random shapes: clutter without faces."""
    # Gradient and blotches are built on a 7x7 grid: bilinear upsampling keeps a linear ramp exact.
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * np.pi)
    g = np.linspace(0.0, 1.0, 7)
    ramp = np.cos(a) * g[None, :] + np.sin(a) * g[:, None]
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    small = c1 + (c2 - c1) * ramp[..., None] + rng.normal(0, 30, (7, 7, 3))
    small = np.clip(small, 0, 255).astype(np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(3, 12))):
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        r = rng.uniform(0.03, 0.3) * size
        if kind == 0:
            w, h = rng.uniform(0.05, 0.5, 2) * size
            box = cv2.boxPoints(((x, y), (w, h), rng.uniform(0, 180)))
            cv2.fillPoly(img, [np.round(box).astype(np.int32)], color, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(r), color, -1, cv2.LINE_AA)
        elif kind == 2:
            x2, y2 = rng.uniform(0, 1, 2) * size
            cv2.line(img, (int(x), int(y)), (int(x2), int(y2)), color, int(rng.integers(1, 8)), cv2.LINE_AA)
        else:
            poly = np.array([x, y]) + rng.normal(0, r, (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(img, [np.round(poly).astype(np.int32)], color, cv2.LINE_AA)
    return img


def _occluder(rng: np.random.Generator, img: np.ndarray, lm: np.ndarray, face_width: float,
              skin: tuple[float, ...]) -> np.ndarray:
    """Cover part of the face with a rectangle, ellipse or blob (sometimes skin-coloured, like a hand)."""
    mask = np.zeros(img.shape[:2], np.uint8)
    centre = lm[rng.integers(len(lm))] + rng.normal(0, 0.1 * face_width, 2)
    size = _u(rng, 0.25, 0.55) * face_width
    kind = rng.integers(3)
    if kind == 0:
        w, h = size * rng.uniform(0.6, 1.6, 2)
        poly = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(w), float(h)), _u(rng, 0, 180)))
    elif kind == 1:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ax = size * rng.uniform(0.4, 0.8, 2)
        poly = centre + np.stack([ax[0] * np.cos(t), ax[1] * np.sin(t)], axis=1)
    else:
        t = np.sort(rng.uniform(0, 2 * np.pi, 9))
        r = size * rng.uniform(0.3, 0.7, 9)
        poly = centre + np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    poly = np.round(np.asarray(poly) * 16).astype(np.int32)
    if rng.random() < 0.4:
        color = tuple(float(c * _u(rng, 0.8, 1.1)) for c in skin)
    else:
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
    cv2.fillPoly(img, [poly], color, cv2.LINE_AA, 4)
    cv2.polylines(img, [poly], True, tuple(c * 0.6 for c in color), 1, cv2.LINE_AA, 4)
    cv2.fillPoly(mask, [poly], 255, cv2.LINE_8, 4)
    return mask


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """Fixed unit Gaussian noise, twice the image side: a random window of it is much cheaper
    than fresh normals per image, and still deterministic."""
    return np.random.default_rng(20180618).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _degrade(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Camera effects: blur, colour/contrast shifts, sensor noise, sometimes greyscale."""
    size = img.shape[0]
    if rng.random() < 0.6:
        sigma = _u(rng, 0.3, 1.2) * strength * size / 256
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    affine = np.zeros((3, 4))
    affine[[0, 1, 2], [0, 1, 2]] = rng.uniform(0.9, 1.1, 3) * _u(rng, 0.75, 1.2)
    affine[:, 3] = _u(rng, -25, 25)
    out = cv2.transform(img, affine)  # per-channel gain and offset, saturating
    y, x = rng.integers(0, size, 2)
    noise = _noise_bank(size)[y:y + size, x:x + size] * np.float32(_u(rng, 1.0, 6.0) * strength)
    out = cv2.add(out, noise, dtype=cv2.CV_8U)
    if rng.random() < 0.08:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return out


def _behind_nose(shape: FaceShape, pose: Pose, points: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Points the drawn nose covers: inside its projected hull and farther from the camera than its ridge."""
    hull_xy, hull_z = face3d.project(shape.nose, pose)
    hull = cv2.convexHull(hull_xy.astype(np.float32).reshape(-1, 1, 2))
    ridge = hull_z.mean()
    inside = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) > 0 for x, y in points])
    return inside & (depth < ridge - 0.05)


def render_scene(scene: Scene, size: int) -> Sample:
    rng = np.random.default_rng(scene.pixel_seed)
    img = _background(rng, size)
    shape = face3d.face_shape(scene.identity, scene.expression)
    face3d.render_face(img, shape, scene.pose, scene.style)
    lm68, _ = face3d.project(shape.landmarks, scene.pose)
    a19, d19 = face3d.project(shape.aflw, scene.pose)
    visible = face3d.facing(shape.aflw, scene.pose) > VISIBLE_FACING
    nose_points = np.zeros(19, bool)
    nose_points[[12, 13, 14]] = True
    visible &= ~(_behind_nose(shape, scene.pose, a19, d19) & ~nose_points)
    if scene.occluder:
        mask = _occluder(rng, img, lm68, 2.0 * scene.pose.scale, scene.style.skin)
        ij = np.clip(np.round(a19).astype(int), 0, size - 1)
        visible &= mask[ij[:, 1], ij[:, 0]] == 0
    img = _degrade(rng, img, scene.degrade)
    return Sample(img, lm68, a19, visible, scene.pose)


def render_random(seed_words: list[int], regime: Regime, size: int) -> Sample:
    return render_scene(sample_scene(np.random.default_rng(seed_words), regime, size), size)


# ----------------------------------------------------------------------------- formats


def _encode(img: np.ndarray, ext: str) -> bytes:
    if ext == ".png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buf.tobytes()


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
    half = 0.5 * (gt[2:] - gt[:2]) * _u(rng, 0.95, 1.15)
    c = c + rng.normal(0, 0.04, 2) * 2 * half
    return np.array([*(c - half), *(c + half)])


class _Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.t0 = label, total, 0, time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.done % PROGRESS_EVERY == 0 or self.done == self.total:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            print(f"[synth {self.label}] {self.done}/{self.total} images ({rate:.0f}/s)", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Job:
    seed_words: tuple[int, ...]
    regime: Regime
    size: int
    path: Path
    ext: str
    person_seed: tuple[int, ...] | None = None  # set: an image of the person these words draw


def _render_job(job: _Job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one image, write it, return its (68-point, 19-point, 19-visibility) annotations."""
    if job.person_seed is None:
        sample = render_random(list(job.seed_words), job.regime, job.size)
    else:
        person = sample_person(np.random.default_rng(list(job.person_seed)))
        scene = sample_person_scene(np.random.default_rng(list(job.seed_words)), person, job.regime, job.size)
        sample = render_scene(scene, job.size)
    job.path.write_bytes(_encode(sample.image, job.ext))
    return sample.landmarks68, sample.aflw19, sample.visible19


def _single_threaded() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def _worker_count(n_jobs: int) -> int:
    """Processes for a job list: none for small sets (spawning costs ~1-2 s), else one per core."""
    return 1 if n_jobs < PARALLEL_FROM else max(1, min(len(os.sched_getaffinity(0)), 8))


def _run_jobs(jobs: list[_Job], label: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Render all jobs, in order. Results depend only on each job's seed, never on the worker count.

    Worker processes are spawned (not forked: callers may hold threads), so a calling script
    must guard its entry point with ``if __name__ == "__main__"``.
    """
    progress = _Progress(label, len(jobs))
    workers = _worker_count(len(jobs))
    results = []
    if workers == 1:
        for job in jobs:
            results.append(_render_job(job))
            progress.step()
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_single_threaded) as pool:
        for result in pool.map(_render_job, jobs, chunksize=16):
            results.append(result)
            progress.step()
    return results


def _staging_dir(root: Path) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))


def _seed_word(seed: int) -> int:
    return int(seed) % (2**63)


def synth_w300(root: Path, counts: dict[str, int], seed: int, image_size: int = 256) -> dict:
    """Write a 300-W tree under root (§1.1): images with .pts beside them plus the
    ``Bounding Boxes/bounding_boxes_<set>.mat`` files. ``counts`` maps each folder to a face count.

    The first afw .pts is written with CRLF line ends and the first ibug .pts without a final
    newline, so readers meet both variants. Returns counts written per folder.
    """
    root = Path(root)
    if set(counts) != set(W300_FOLDERS):
        raise ValueError(f"counts must have exactly the keys {list(W300_FOLDERS)}, got {sorted(counts)}")
    s = _seed_word(seed)
    odd_files: dict[str, str] = {}
    tmp = _staging_dir(root)
    try:
        jobs, files = [], []
        for code, folder in enumerate(W300_FOLDERS, start=1):
            ext = ".png" if folder.startswith("lfpw") else ".jpg"
            regime = CHALLENGING if folder == "ibug" else COMMON
            (tmp / folder).mkdir(parents=True)
            stems = _w300_stems(folder, counts[folder], np.random.default_rng([s, code, 0, 0]))
            for i, stem in enumerate(stems):
                jobs.append(_Job((s, code, 1, i), regime, image_size, tmp / folder / f"{stem}{ext}", ext))
                files.append((code, folder, i, stem, ext))
        results = _run_jobs(jobs, "w300")

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
    side = float((hi - lo).max()) * _u(rng, 0.98, 1.06)
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
    s, code = _seed_word(seed), 100
    meta_rng = np.random.default_rng([s, code, 0, 0])
    numbers = np.sort(meta_rng.choice(np.arange(2, 100_000), n_faces, replace=False))
    subs = meta_rng.choice(AFLW_SUBFOLDERS, n_faces, p=[0.45, 0.25, 0.30])
    names = [f"{sub}/image{num:05d}.jpg" for sub, num in zip(subs, numbers)]
    ra = meta_rng.permutation(n_faces) + 1
    box_rng = np.random.default_rng([s, code, 2, 0])

    tmp = _staging_dir(root)
    try:
        flickr = tmp / "data" / "flickr"
        for sub in AFLW_SUBFOLDERS:
            (flickr / str(sub)).mkdir(parents=True)
        jobs = [_Job((s, code, 1, i), AFLW, image_size, flickr / name, ".jpg") for i, name in enumerate(names)]
        results = _run_jobs(jobs, "aflw")
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
