"""A procedural 3D face: symmetric landmark shape model, head pose, projection and drawing.

Why 3D: the synthetic landmark sets must behave like the real ones under pose — far-side points
foreshorten and become self-occluded, the nose crosses the far eye, the head silhouette changes —
so that pose balancing (PDB) and visibility flags have something real to act on. Every landmark is
the exact orthographic projection of a 3D point, and the drawing puts visible structure (eye
contours, brow strokes, nostrils, lip edges, the jaw outline) on those same points.

Model frame: x to image-right, y down, z toward the camera; one unit = half the face width at the
ear line; the eye line is y = 0. The shape is mirror-symmetric by construction (the image-right
half is the image-left half mirrored through ``W300_FLIP``), so a mirrored render equals the
render at mirrored pose with the landmarks permuted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facebench.data.landmark_layouts import W300_FLIP

_SHIFT = 4  # cv2 drawing with 4 fractional bits keeps sub-pixel landmark positions
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

# 68-point indices of the 19 AFLW-Full points; eye and mouth centres are built separately.
_AFLW_FROM_68 = (17, 19, 21, 22, 24, 26, 36, -1, 39, 42, -1, 45, 31, 30, 35, 48, -1, 54, 8)

_HEAD_CENTRE = np.array([0.0, 0.3, -0.5])  # rotation centre of the head
_NORMAL_CENTRE = np.array([0.0, 0.35, -0.85])  # ellipsoid whose normals stand in for the surface's
_NORMAL_AXES = np.array([1.0, 1.5, 0.7])


@dataclass(frozen=True)
class Identity:
    """Per-person shape parameters. All are symmetric, so identities never break the mirror law."""

    face_width: float = 1.0
    face_height: float = 1.0  # scale of the jaw below the eye line
    jaw_power: float = 2.0  # 2 = elliptic jaw, larger = squarer
    forehead_height: float = 1.0
    eye_spacing: float = 1.0
    eye_size: float = 1.0
    eye_open: float = 1.0
    brow_height: float = 0.0
    brow_arch: float = 0.0
    nose_length: float = 1.0
    nose_width: float = 1.0
    nose_depth: float = 1.0
    mouth_width: float = 1.0
    mouth_y: float = 0.0
    lip_thickness: float = 1.0
    hair_length: float = 0.3  # lowest y the hair reaches (0 = ear line, 1.5 = chin)


@dataclass(frozen=True)
class Expression:
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    smile: float = 0.0  # -0.3 (corners down) .. 1 (broad smile)
    brow_raise: float = 0.0  # -0.5 (frown) .. 1 (surprise)
    eyes_open: float = 1.0  # 0 closed .. 1.2 wide


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees and its placement: ``scale`` pixels per model unit, and the pixel
    (0-based centres) where the head's rotation centre lands. Positive yaw turns the nose to
    image-right, positive pitch lifts it, positive roll turns the face clockwise on screen."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 50.0
    cx: float = 127.5
    cy: float = 127.5


@dataclass
class FaceShape:
    """All 3D points of one face: the landmarks and the extra geometry needed to draw it."""

    landmarks: np.ndarray  # (68, 3)
    aflw: np.ndarray  # (19, 3)
    outline: np.ndarray  # closed jaw + forehead outline, (K, 3)
    face_cloud: np.ndarray  # outline rings shrinking onto the face front: hull = face silhouette
    hair: np.ndarray  # skull cap and back of the head
    hairline: np.ndarray  # front hair edge across the forehead, image-left to image-right
    neck: np.ndarray
    ears: list[np.ndarray] = field(default_factory=list)  # [image-left, image-right] rings
    nose: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # points whose hull is the nose


def _mirror(points: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[..., 0] *= -1.0
    return out


def _jaw_half(idt: Identity, chin_y: float) -> np.ndarray:
    """Points 0..8: a superellipse from the ear line down to the chin, spaced by arc length."""
    phi = np.linspace(0.0, np.pi / 2, 400)
    p = 2.0 / idt.jaw_power
    x = -idt.face_width * np.cos(phi) ** p
    y = 0.02 + (chin_y - 0.02) * np.sin(phi) ** p
    seg = np.hypot(np.diff(x), np.diff(y))
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, arc[-1], 9)
    xs, ys = np.interp(t, arc, x), np.interp(t, arc, y)
    zs = -0.05 - 0.95 * (np.abs(xs) / idt.face_width) ** 1.6
    return np.stack([xs, ys, zs], axis=1)


def face_shape(idt: Identity = Identity(), exp: Expression = Expression()) -> FaceShape:
    """Build the 3D face. The image-left half is written out; the right half is its mirror."""
    pts = np.full((68, 3), np.nan)
    chin_y = 1.55 * idt.face_height
    pts[0:9] = _jaw_half(idt, chin_y)

    # Brows 17 (outer) .. 21 (inner); the arch lifts the middle.
    bx = np.array([-0.80, -0.68, -0.51, -0.34, -0.18]) * idt.eye_spacing
    by = np.array([-0.18, -0.28, -0.31, -0.29, -0.22]) + idt.brow_height
    by += -idt.brow_arch * np.array([0.0, 0.7, 1.0, 0.7, 0.0])
    by -= 0.08 * exp.brow_raise * np.array([0.8, 0.9, 1.0, 1.1, 1.2])
    bz = np.array([-0.45, -0.25, -0.12, -0.05, -0.02])
    pts[17:22] = np.stack([bx, by, bz], axis=1)

    # Eye 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid.
    ex = np.array([-0.60, -0.50, -0.37, -0.26, -0.37, -0.50])
    ey = np.array([0.0, -0.065, -0.065, 0.01, 0.035, 0.035])
    ez = np.array([-0.38, -0.22, -0.18, -0.22, -0.20, -0.24])
    centre = np.array([-0.43, 0.0])
    ey = ey * np.where(np.arange(6) % 3 == 0, 1.0, idt.eye_open * exp.eyes_open)
    ex = centre[0] * idt.eye_spacing + (ex - centre[0]) * idt.eye_size
    ey = centre[1] + (ey - centre[1]) * idt.eye_size
    pts[36:42] = np.stack([ex, ey, ez], axis=1)

    # Nose bridge 27 (top) .. 30 (tip); nostril base 31, 32, 33 (centre).
    nl, nw, nd = idt.nose_length, idt.nose_width, idt.nose_depth
    pts[27:31] = np.stack([np.zeros(4), -0.03 + np.array([0.0, 0.18, 0.35, 0.53]) * nl,
                           np.array([-0.10, 0.05, 0.20, 0.38]) * nd], axis=1)
    pts[31:34] = np.stack([np.array([-0.19, -0.10, 0.0]) * nw, -0.03 + np.array([0.64, 0.68, 0.71]) * nl,
                           np.array([-0.02, 0.10, 0.16]) * nd], axis=1)

    # Lips: outer 48 (corner), 49, 50, 51 (top centre) / 59, 58, 57 (bottom centre);
    # inner 60 (corner), 61, 62 (top centre) / 67, 66 (bottom centre).
    mw, lt, my = idt.mouth_width, idt.lip_thickness, 0.93 + idt.mouth_y + 0.06 * (nl - 1.0)
    upper = np.array([[-0.37, 0.0, -0.12], [-0.24, -0.06, 0.02], [-0.10, -0.09, 0.10], [0.0, -0.07, 0.12]])
    lower = np.array([[-0.24, 0.15, -0.02], [-0.10, 0.21, 0.06], [0.0, 0.22, 0.08]])
    inner_up = np.array([[-0.31, 0.01, -0.10], [-0.10, 0.0, 0.06], [0.0, 0.005, 0.08]])
    inner_lo = np.array([[-0.10, 0.02, 0.04], [0.0, 0.02, 0.06]])
    for part in (upper, lower, inner_up, inner_lo):
        part[:, 0] *= mw
        part[:, 1] = my + part[:, 1] * np.where(np.abs(part[:, 1]) > 0.03, lt, 1.0)  # thicker lips, same line
    opening = 0.30 * exp.mouth_open
    lower[:, 1] += opening * 0.95
    inner_lo[:, 1] += opening
    # Smile pulls the corners out and up and drags their neighbours a little.
    s = exp.smile
    for part, idx, w in ((upper, 0, 1.0), (inner_up, 0, 1.0), (upper, 1, 0.4), (lower, 0, 0.4)):
        part[idx, 0] -= 0.06 * s * w
        part[idx, 1] -= 0.07 * s * w
    pts[48:52] = upper
    pts[[59, 58, 57]] = lower
    pts[60:63] = inner_up
    pts[[67, 66]] = inner_lo

    # The jaw opens with the mouth: the chin follows fully, the points by the ears barely.
    jaw = pts[0:9]
    w = np.clip((jaw[:, 1] - 0.3) / (jaw[8, 1] - 0.3), 0.0, 1.0)
    jaw[:, 1] += opening * w

    # Mirror the image-left half into the image-right half.
    flip = np.asarray(W300_FLIP)
    left = ~np.isnan(pts[:, 0])
    for i in np.flatnonzero(left):
        j = flip[i]
        if j != i:
            pts[j] = _mirror(pts[i])
    assert not np.isnan(pts).any()

    aflw = np.zeros((19, 3))
    for k, i in enumerate(_AFLW_FROM_68):
        if i >= 0:
            aflw[k] = pts[i]
    aflw[7] = pts[36:42].mean(axis=0)
    aflw[10] = pts[42:48].mean(axis=0)
    aflw[16] = 0.5 * (pts[51] + pts[57])

    # Forehead arc from point 16 over the top back to point 0 closes the face outline.
    theta = np.linspace(0.0, np.pi, 25)[1:-1]
    fh = 1.05 * idt.forehead_height
    fx = idt.face_width * np.cos(theta)
    fy = 0.02 - fh * np.sin(theta)
    fz = -0.05 - 0.95 * np.abs(np.cos(theta)) ** 1.6 - 0.25 * np.sin(theta) ** 2
    forehead = np.stack([fx, fy, fz], axis=1)
    outline = np.concatenate([pts[0:17], forehead], axis=0)

    # Rings shrinking toward a dome over the face front: their hull is the face silhouette.
    c = np.array([0.0, 0.3])
    rings = []
    for r in (1.0, 0.85, 0.6, 0.3):
        ring = outline.copy()
        ring[:, :2] = c + r * (outline[:, :2] - c)
        ring[:, 2] = -0.05 - (-0.05 - outline[:, 2]) * r**2
        rings.append(ring)
    face_cloud = np.concatenate(rings + [pts], axis=0)  # the landmarks add nose, lips and chin

    # Hair: an ellipsoid around the skull, minus the face front, cut at the hair length.
    a, b = np.meshgrid(np.linspace(0, 2 * np.pi, 24, endpoint=False), np.linspace(0.05, np.pi - 0.05, 12))
    skull = np.stack([1.1 * idt.face_width * np.sin(b) * np.cos(a), -0.1 - 1.2 * fh * np.cos(b),
                      -0.75 + 1.15 * np.sin(b) * np.sin(a)], axis=-1).reshape(-1, 3)
    keep = ((skull[:, 1] < -0.65 * fh) | (skull[:, 2] < -0.55)) & (skull[:, 1] < idt.hair_length)
    hair = skull[keep]
    hx = np.linspace(-0.92, 0.92, 15) * idt.face_width
    hy = -0.62 * fh - 0.18 * (hx / idt.face_width) ** 2 * fh
    hz = -0.1 - 0.6 * np.abs(hx / idt.face_width) ** 2
    hairline = np.stack([hx, hy, hz], axis=1)

    neck_pts = []
    for y in (0.9, 4.0):
        for a in np.linspace(0, 2 * np.pi, 12, endpoint=False):
            neck_pts.append([0.62 * idt.face_width * np.cos(a), y, -0.75 + 0.5 * np.sin(a)])
    neck = np.array(neck_pts)

    # Ears: rings facing sideways and a little forward, behind the jaw at the ear line.
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    axis = np.array([-0.55, 0.0, 0.83])
    ear_c = np.array([-1.02 * idt.face_width, 0.2, -1.0])
    ear_l = ear_c + np.outer(0.13 * np.cos(t), axis) + np.outer(0.26 * np.sin(t), [0.0, 1.0, 0.0])
    ears = [ear_l, _mirror(ear_l)]

    # Nose hull: bridge, tip, nostrils and the wings above them.
    wing = np.array([[-0.22 * nw, -0.03 + 0.55 * nl, -0.08 * nd], [-0.09, 0.02, -0.16]])
    nose = np.concatenate([pts[27:36], wing, _mirror(wing)], axis=0)
    return FaceShape(pts, aflw, outline, face_cloud, hair, hairline, neck, ears, nose)


def rotation(pose: Pose) -> np.ndarray:
    """R = Rz(roll) @ Rx(pitch) @ Ry(yaw), acting on model-frame column vectors."""
    y, p, r = np.deg2rad([pose.yaw, pose.pitch, pose.roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(points: np.ndarray, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection: (N, 2) pixel positions (0-based centres) and (N,) depth toward camera."""
    cam = (points - _HEAD_CENTRE) @ rotation(pose).T
    xy = cam[:, :2] * pose.scale + np.array([pose.cx, pose.cy])
    return xy, cam[:, 2]


def facing(points: np.ndarray, pose: Pose) -> np.ndarray:
    """How much each point's surface faces the camera (z of a unit normal, > 0 = facing).

    Normals come from a smooth ellipsoid around the face rather than the sparse points: good
    enough to say when a point has turned to the far side of the head.
    """
    n = (points - _NORMAL_CENTRE) / _NORMAL_AXES**2
    n = n / np.linalg.norm(n, axis=1, keepdims=True)
    return (n @ rotation(pose).T)[:, 2]


@dataclass(frozen=True)
class Style:
    """Colours (BGR) and lighting of one render."""

    skin: tuple[float, float, float] = (150.0, 170.0, 210.0)
    lips: tuple[float, float, float] = (110.0, 110.0, 190.0)
    hair: tuple[float, float, float] = (40.0, 45.0, 55.0)
    brows: tuple[float, float, float] = (35.0, 40.0, 50.0)
    iris: tuple[float, float, float] = (40.0, 60.0, 90.0)
    light: tuple[float, float, float] = (0.3, -0.3, 0.9)  # unit-ish direction toward the light
    ambient: float = 0.55
    has_hair: bool = True
    gaze: tuple[float, float] = (0.0, 0.0)  # iris offset in eye-widths


def _fx(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _fill(img: np.ndarray, pts: np.ndarray, color) -> None:
    cv2.fillPoly(img, [_fx(pts)], color, _AA, _SHIFT)


def _hull(img: np.ndarray, pts: np.ndarray, color) -> None:
    hull = cv2.convexHull(_fx(pts).reshape(-1, 1, 2))
    cv2.fillConvexPoly(img, hull, color, _AA, _SHIFT)


def _stroke(img: np.ndarray, pts: np.ndarray, color, thickness: int, closed: bool = False) -> None:
    cv2.polylines(img, [_fx(pts)], closed, color, max(1, int(thickness)), _AA, _SHIFT)


def _shade(color, k: float) -> tuple[float, ...]:
    return tuple(float(min(255.0, c * k)) for c in color)


def _clipped(img: np.ndarray, clip: np.ndarray, draw) -> None:
    """Run ``draw`` on a copy of the clip polygon's neighbourhood and keep it only inside the polygon."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(clip.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(clip.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    layer = roi.copy()
    draw(layer, np.array([x0, y0], dtype=float))
    mask = np.zeros(roi.shape[:2], np.uint8)
    _fill(mask, clip - [x0, y0], 255)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    roi[:] = (layer * a + roi * (1.0 - a)).astype(np.uint8)


def render_face(img: np.ndarray, shape: FaceShape, pose: Pose, style: Style) -> np.ndarray:
    """Draw the head into ``img`` (H, W, 3 uint8, modified in place); return the face-skin mask."""
    s = pose.scale
    skin = style.skin

    def pj(points: np.ndarray) -> np.ndarray:
        return project(points, pose)[0]

    lm, depth = project(shape.landmarks, pose)
    face_facing = facing(shape.landmarks, pose)

    _hull(img, pj(shape.neck), _shade(skin, 0.72))
    head_color = style.hair if style.has_hair else _shade(skin, 0.95)
    _hull(img, pj(shape.hair), head_color)
    for ear in shape.ears:
        if facing(ear.mean(axis=0, keepdims=True), pose)[0] > -0.25:
            e = pj(ear)
            _fill(img, e, _shade(skin, 0.85))
            _stroke(img, e, _shade(skin, 0.6), s * 0.025)

    mask = np.zeros(img.shape[:2], np.uint8)
    cloud = pj(shape.face_cloud)
    _hull(img, cloud, skin)
    _hull(mask, cloud, 255)

    # Features back to front, so at large yaw the nose covers the far eye.
    groups = {
        "brow_l": range(17, 22), "brow_r": range(22, 27), "eye_l": range(36, 42), "eye_r": range(42, 48),
        "nose": range(27, 36), "mouth": range(48, 68),
    }
    order = sorted(groups, key=lambda g: depth[list(groups[g])].mean())
    for g in order:
        idx = list(groups[g])
        if face_facing[idx].mean() < 0.1 and g != "nose":
            continue  # turned to the far side of the head
        if g.startswith("brow"):
            _stroke(img, lm[idx], style.brows, s * 0.075)
        elif g.startswith("eye"):
            _draw_eye(img, lm[idx], s, style)
        elif g == "nose":
            _draw_nose(img, shape, pose, lm, style)
        else:
            _draw_mouth(img, lm, s, style)

    _apply_shading(img, mask, pose, style)
    if style.has_hair:
        _draw_fringe(img, shape, pose, style)
    return mask


def _draw_eye(img: np.ndarray, e: np.ndarray, s: float, style: Style) -> None:
    width = np.linalg.norm(e[3] - e[0])
    centre = e.mean(axis=0) + np.array(style.gaze) * width
    r = 0.2 * width

    def iris(layer: np.ndarray, off: np.ndarray) -> None:
        c = _fx(centre - off)
        cv2.circle(layer, tuple(int(v) for v in c), int(r * _ONE), style.iris, -1, _AA, _SHIFT)
        cv2.circle(layer, tuple(int(v) for v in c), int(0.45 * r * _ONE), (15, 15, 15), -1, _AA, _SHIFT)

    _fill(img, e, (225, 228, 232))
    _clipped(img, e, iris)
    _stroke(img, e[[0, 1, 2, 3]], (25, 25, 30), s * 0.03)  # upper lid, heavier
    _stroke(img, e[[3, 4, 5, 0]], _shade(style.skin, 0.45), s * 0.015)
    crease = e[[0, 1, 2, 3]] + np.array([0.0, -0.35]) * np.linalg.norm(e[1] - e[5])
    _stroke(img, crease, _shade(style.skin, 0.78), s * 0.012)


def _draw_nose(img: np.ndarray, shape: FaceShape, pose: Pose, lm: np.ndarray, style: Style) -> None:
    s = pose.scale
    hull = project(shape.nose, pose)[0]
    _hull(img, hull, _shade(style.skin, 1.04))
    # The side facing away from the light gets a shadow line from the bridge to the wing.
    shadow_side = 31 if style.light[0] > 0 else 35
    side = np.array([0.5 * (lm[28] + lm[shadow_side]), lm[shadow_side]])
    _stroke(img, side, _shade(style.skin, 0.7), s * 0.02)
    _stroke(img, lm[27:31], _shade(style.skin, 1.15), s * 0.035)  # ridge highlight
    _stroke(img, lm[31:36], _shade(style.skin, 0.55), s * 0.025)  # nostril base
    for a, b in ((31, 32), (34, 35)):
        c = 0.5 * (lm[a] + lm[b]) - np.array([0.0, 0.012 * s])
        axes = (int(0.05 * s * _ONE), int(0.022 * s * _ONE))
        cv2.ellipse(img, tuple(int(v) for v in _fx(c)), axes, pose.roll, 0, 360, (25, 25, 35), -1, _AA, _SHIFT)
    cv2.circle(img, tuple(int(v) for v in _fx(lm[30])), int(0.035 * s * _ONE), _shade(style.skin, 1.2), -1, _AA, _SHIFT)


def _draw_mouth(img: np.ndarray, lm: np.ndarray, s: float, style: Style) -> None:
    outer, inner = lm[48:60], lm[60:68]
    _fill(img, outer, style.lips)
    gap = np.linalg.norm(lm[66] - lm[62])
    if gap > 0.02 * s:
        def teeth(layer: np.ndarray, off: np.ndarray) -> None:
            _fill(layer, inner - off, (30, 25, 60))
            band = np.concatenate([lm[60:65], lm[60:65][::-1] + np.array([0.0, 0.35 * gap])]) - off
            _fill(layer, band, (215, 225, 230))
        _clipped(img, inner, teeth)
    _stroke(img, inner[[0, 1, 2, 3, 4]], (35, 30, 70), s * 0.025)
    _stroke(img, inner[[4, 5, 6, 7, 0]], _shade(style.lips, 0.6), s * 0.015)
    _stroke(img, outer, _shade(style.lips, 0.75), s * 0.012, closed=True)


def _apply_shading(img: np.ndarray, mask: np.ndarray, pose: Pose, style: Style) -> None:
    """Lambert shading of a sphere-like face: a gradient toward the light, darker at the rim."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cx, cy = project(np.array([[0.0, 0.3, 0.0]]), pose)[0][0]
    u = (xx - cx) / (1.15 * pose.scale)
    v = (yy - cy) / (1.7 * pose.scale)
    nz = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
    light = np.asarray(style.light, np.float32)
    light = light / np.linalg.norm(light)
    lam = np.clip(u * light[0] + v * light[1] + nz * light[2], 0.0, 1.0)
    shade = style.ambient + (1.0 - style.ambient) * lam * 1.25
    a = mask[y0:y1, x0:x1].astype(np.float32)[..., None] / 255.0
    roi = img[y0:y1, x0:x1].astype(np.float32)
    out = roi * (1.0 - a) + np.clip(roi * shade[..., None], 0, 255) * a
    img[y0:y1, x0:x1] = out.astype(np.uint8)


def _draw_fringe(img: np.ndarray, shape: FaceShape, pose: Pose, style: Style) -> None:
    """Hair over the top of the forehead: the outline above the hairline, closed by the hairline."""
    top = shape.outline[17:][shape.outline[17:, 1] < shape.hairline[0, 1]]
    if len(top) < 2:
        return
    # Outline runs image-right -> image-left over the top; hairline runs left -> right.
    poly = np.concatenate([top, shape.hairline], axis=0)
    _fill(img, project(poly, pose)[0], style.hair)
