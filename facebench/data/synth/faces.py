"""Procedural faces: what a scene is (identity, expression, pose, style, drawn from a regime of poses and
occlusion), and its rendering into an image with exact landmarks (the 3D face of face3d.py), plus the
image encoding every writer uses.

Determinism: every image draws from its own generator (the writers seed it per folder and index), and
JPEG/PNG settings are fixed, so one seed gives byte-identical images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import cv2
import numpy as np

from facebench.data.synth import face3d
from facebench.data.synth.face3d import Expression, FaceShape, Identity, Pose, Style

JPEG_QUALITY = 92
PNG_COMPRESSION = 1
VISIBLE_FACING = 0.2  # an AFLW point turned further than ~78 degrees from the camera is hidden

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


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_identity(rng: np.random.Generator) -> Identity:
    return Identity(
        face_width=uniform(rng, 0.9, 1.1), face_height=uniform(rng, 0.9, 1.12), jaw_power=uniform(rng, 1.8, 2.8),
        forehead_height=uniform(rng, 0.9, 1.1), eye_spacing=uniform(rng, 0.92, 1.08), eye_size=uniform(rng, 0.85, 1.15),
        eye_open=uniform(rng, 0.75, 1.3), brow_height=uniform(rng, -0.05, 0.05), brow_arch=uniform(rng, -0.03, 0.05),
        nose_length=uniform(rng, 0.88, 1.12), nose_width=uniform(rng, 0.85, 1.2), nose_depth=uniform(rng, 0.8, 1.2),
        mouth_width=uniform(rng, 0.85, 1.15), mouth_y=uniform(rng, -0.04, 0.04), lip_thickness=uniform(rng, 0.7, 1.3),
        hair_length=uniform(rng, -0.3, 1.6))


def sample_expression(rng: np.random.Generator, strength: float) -> Expression:
    mouth = uniform(rng, 0.15, 1.0) * strength if rng.random() < 0.35 else uniform(rng, 0.0, 0.08)
    eyes = uniform(rng, 0.1, 0.5) if rng.random() < 0.05 else uniform(rng, 0.8, 1.15)
    return Expression(mouth_open=mouth, smile=uniform(rng, -0.3, 1.0) * strength,
                      brow_raise=uniform(rng, -0.5, 1.0) * strength, eyes_open=eyes)


def sample_pose(rng: np.random.Generator, regime: Regime, size: int) -> Pose:
    """Yaw is a mixture: mostly near frontal, with a long tail to ``regime.yaw_tail``."""
    if rng.random() < regime.frontal_share:
        yaw = float(np.clip(rng.normal(0.0, 10.0), -25.0, 25.0))
    else:
        yaw = float(rng.choice([-1.0, 1.0]) * rng.uniform(20.0, regime.yaw_tail))
    pitch = float(np.clip(rng.normal(0.0, regime.pitch / 2), -regime.pitch, regime.pitch))
    roll = float(np.clip(rng.normal(0.0, regime.roll / 2), -regime.roll, regime.roll))
    scale = uniform(rng, *regime.face_width) * size / 2.0  # the face is 2 model units wide
    centre = (size - 1) / 2.0
    return Pose(yaw, pitch, roll, scale, centre + uniform(rng, -0.1, 0.1) * size, centre + uniform(rng, -0.08, 0.08) * size)


def sample_style(rng: np.random.Generator) -> Style:
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    k = min(int(t), len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[k] + (t - k) * (_SKIN_TONES[k + 1] - _SKIN_TONES[k]) + rng.uniform(-8, 8, 3)
    lips = np.clip(skin * np.array([0.72, 0.68, 0.92]) + np.array([0, 0, 18]) + rng.uniform(-10, 10, 3), 0, 255)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.uniform(-12, 12, 3)
    brows = np.clip(np.minimum(hair, skin * 0.55) * uniform(rng, 0.7, 1.0), 0, 255)
    iris = _IRIS[rng.integers(len(_IRIS))] + rng.uniform(-10, 10, 3)
    light = (uniform(rng, -0.8, 0.8), uniform(rng, -0.7, 0.3), uniform(rng, 0.5, 1.0))
    tup = lambda a: tuple(float(v) for v in np.clip(a, 0, 255))  # noqa: E731
    return Style(skin=tup(skin), lips=tup(lips), hair=tup(hair), brows=tup(brows), iris=tup(iris), light=light,
                 ambient=uniform(rng, 0.35, 0.7), has_hair=bool(rng.random() < 0.9),
                 gaze=(uniform(rng, -0.12, 0.12), uniform(rng, -0.05, 0.05)))


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


def background(rng: np.random.Generator, size: int) -> np.ndarray:
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


def occluder(rng: np.random.Generator, img: np.ndarray, lm: np.ndarray, face_width: float,
              skin: tuple[float, ...]) -> np.ndarray:
    """Cover part of the face with a rectangle, ellipse or blob (sometimes skin-coloured, like a hand)."""
    mask = np.zeros(img.shape[:2], np.uint8)
    centre = lm[rng.integers(len(lm))] + rng.normal(0, 0.1 * face_width, 2)
    size = uniform(rng, 0.25, 0.55) * face_width
    kind = rng.integers(3)
    if kind == 0:
        w, h = size * rng.uniform(0.6, 1.6, 2)
        poly = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(w), float(h)), uniform(rng, 0, 180)))
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
        color = tuple(float(c * uniform(rng, 0.8, 1.1)) for c in skin)
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
        sigma = uniform(rng, 0.3, 1.2) * strength * size / 256
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    affine = np.zeros((3, 4))
    affine[[0, 1, 2], [0, 1, 2]] = rng.uniform(0.9, 1.1, 3) * uniform(rng, 0.75, 1.2)
    affine[:, 3] = uniform(rng, -25, 25)
    out = cv2.transform(img, affine)  # per-channel gain and offset, saturating
    y, x = rng.integers(0, size, 2)
    noise = _noise_bank(size)[y:y + size, x:x + size] * np.float32(uniform(rng, 1.0, 6.0) * strength)
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
    img = background(rng, size)
    shape = face3d.face_shape(scene.identity, scene.expression)
    face3d.render_face(img, shape, scene.pose, scene.style)
    lm68, _ = face3d.project(shape.landmarks, scene.pose)
    a19, d19 = face3d.project(shape.aflw, scene.pose)
    visible = face3d.facing(shape.aflw, scene.pose) > VISIBLE_FACING
    nose_points = np.zeros(19, bool)
    nose_points[[12, 13, 14]] = True
    visible &= ~(_behind_nose(shape, scene.pose, a19, d19) & ~nose_points)
    if scene.occluder:
        mask = occluder(rng, img, lm68, 2.0 * scene.pose.scale, scene.style.skin)
        ij = np.clip(np.round(a19).astype(int), 0, size - 1)
        visible &= mask[ij[:, 1], ij[:, 0]] == 0
    img = _degrade(rng, img, scene.degrade)
    return Sample(img, lm68, a19, visible, scene.pose)


def render_random(seed_words: list[int], regime: Regime, size: int) -> Sample:
    return render_scene(sample_scene(np.random.default_rng(seed_words), regime, size), size)



def encode(img: np.ndarray, ext: str) -> bytes:
    if ext == ".png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buf.tobytes()

