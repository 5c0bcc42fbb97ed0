"""The procedural 3D face (facebench/data/synth/face3d.py): rotation against scipy, projection by hand, and the
mirror law the synthetic sets and their flip augmentation rely on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from facebench.data.synth import face3d
from facebench.data.synth.face3d import Expression, Identity, Pose
from facebench.data.landmark_layouts import AFLW19_FLIP, W300_FLIP


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, 0, 0), (0, -20, 0), (0, 0, 45), (-60, 25, -10)])
def test_rotation_is_roll_after_pitch_after_yaw_as_scipy_composes_it(yaw, pitch, roll):
    ours = face3d.rotation(Pose(yaw=yaw, pitch=pitch, roll=roll))
    # Extrinsic y, then x, then z: R = Rz(roll) Rx(pitch) Ry(yaw).
    reference = Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix()
    np.testing.assert_allclose(ours, reference, atol=1e-12)
    np.testing.assert_allclose(ours @ ours.T, np.eye(3), atol=1e-12)


def test_positive_yaw_turns_the_nose_to_image_right_and_positive_roll_turns_clockwise():
    nose = face3d.face_shape().landmarks[30]
    straight, _ = face3d.project(nose[None], Pose())
    turned, _ = face3d.project(nose[None], Pose(yaw=30))
    assert turned[0, 0] > straight[0, 0]
    # Clockwise on screen (y down): a point to image-right of the centre moves down.
    right_eye = face3d.face_shape().landmarks[45]
    level, _ = face3d.project(right_eye[None], Pose())
    rolled, _ = face3d.project(right_eye[None], Pose(roll=20))
    assert rolled[0, 1] > level[0, 1]


def test_frontal_projection_by_hand():
    # At zero pose: pixel = (point - head centre)[:2] * scale + (cx, cy); depth = z - head centre z.
    point = np.array([[0.4, -0.2, 0.1]])
    xy, depth = face3d.project(point, Pose(scale=50.0, cx=100.0, cy=80.0))
    np.testing.assert_allclose(xy, [[0.4 * 50 + 100, (-0.2 - 0.3) * 50 + 80]])
    np.testing.assert_allclose(depth, [0.1 + 0.5])


@pytest.mark.parametrize("identity,expression", [
    (Identity(), Expression()),
    (Identity(face_width=1.2, jaw_power=3.0, eye_spacing=0.9, nose_width=1.3, mouth_width=0.8),
     Expression(mouth_open=0.7, smile=0.5, brow_raise=-0.3, eyes_open=0.6)),
])
def test_shape_is_mirror_symmetric_and_complete(identity, expression):
    shape = face3d.face_shape(identity, expression)
    for points, flip in ((shape.landmarks, W300_FLIP), (shape.aflw, AFLW19_FLIP)):
        assert np.isfinite(points).all()
        mirrored = points.copy()
        mirrored[:, 0] *= -1
        np.testing.assert_allclose(mirrored[list(flip)], points, atol=1e-9)  # the chin's x is 0 up to rounding


@pytest.mark.parametrize("yaw,pitch,roll", [(25, 10, 8), (-50, -15, 20)])
def test_mirrored_projection_equals_projection_at_mirrored_pose_with_points_permuted(yaw, pitch, roll):
    """The law that makes horizontal flips of the synthetic sets exact: flipping an image of width W
    (x -> W - 1 - x) shows the face at (-yaw, pitch, -roll) with the centre mirrored too."""
    width = 256
    shape = face3d.face_shape(Identity(face_width=1.1), Expression(smile=0.4))
    pose = Pose(yaw=yaw, pitch=pitch, roll=roll, scale=60.0, cx=120.0, cy=130.0)
    mirror_pose = Pose(yaw=-yaw, pitch=pitch, roll=-roll, scale=60.0, cx=width - 1 - 120.0, cy=130.0)
    xy, depth = face3d.project(shape.landmarks, pose)
    xy_m, depth_m = face3d.project(shape.landmarks, mirror_pose)
    flipped = xy.copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    np.testing.assert_allclose(xy_m[list(W300_FLIP)], flipped, atol=1e-9)
    np.testing.assert_allclose(depth_m[list(W300_FLIP)], depth, atol=1e-12)


def test_far_side_points_stop_facing_the_camera_as_the_head_turns():
    shape = face3d.face_shape()
    left_eye, right_eye, left_jaw, right_jaw = 36, 45, 2, 14  # outer eye corners, cheek points
    frontal = face3d.facing(shape.landmarks, Pose())
    assert frontal[30] > 0.9 and frontal[left_eye] > 0.5 and frontal[right_eye] > 0.5
    assert frontal[left_eye] == pytest.approx(frontal[right_eye])
    assert frontal[left_jaw] == pytest.approx(frontal[right_jaw])
    turned = face3d.facing(shape.landmarks, Pose(yaw=80))  # nose to image-right: the right half turns away
    assert turned[right_eye] < 0 < turned[left_eye]
    assert turned[right_jaw] < frontal[right_jaw] and turned[left_jaw] > frontal[left_jaw]
    assert face3d.facing(shape.landmarks, Pose(yaw=180))[30] < 0


def test_render_draws_inside_the_face_and_leaves_the_background_alone():
    shape = face3d.face_shape()
    pose = Pose(scale=40.0, cx=63.5, cy=55.0)
    img = np.zeros((128, 128, 3), np.uint8)
    mask = face3d.render_face(img, shape, pose, face3d.Style())  # draws into img, returns the skin mask
    xy, _ = face3d.project(shape.landmarks, pose)
    x0, y0 = np.floor(xy.min(0)).astype(int)
    x1, y1 = np.ceil(xy.max(0)).astype(int)
    assert (mask[y0:y1, x0:x1] > 0).mean() > 0.75  # the landmarks' box is mostly skin (the jaw is round)
    ix = np.clip(np.round(xy).astype(int), 0, 127)
    assert (mask[ix[:, 1], ix[:, 0]] > 0).mean() > 0.9  # the landmarks lie on the face
    assert not img[-4:, :4].any() and not img[-4:, -4:].any()  # bottom corners stay background
    assert not mask[:, :4].any() and not mask[:, -4:].any()  # no skin beside the head
