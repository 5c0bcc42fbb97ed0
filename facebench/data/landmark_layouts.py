"""Index conventions of the 68-point iBUG (300-W) and 19-point AFLW-Full layouts.

All indices are 0-based. "Left" means image-left (the subject's right), as in both datasets'
annotation guides. The flip permutations say which point a point becomes after a horizontal
mirror (x' = W - 1 - x for 0-based pixel centres); both are involutions.
"""

from __future__ import annotations

W300_N_POINTS = 68
AFLW19_N_POINTS = 19


def _w300_flip() -> tuple[int, ...]:
    """Built from the pair list of datasets.md §1.5 so each pair is stated once."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw, chin 8 fixed
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils, 33 fixed; bridge 27-30 fixed
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip, 51 and 57 fixed
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip, 62 and 66 fixed
    perm = list(range(W300_N_POINTS))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


W300_FLIP: tuple[int, ...] = _w300_flip()

# AFLW-Full 19 points: 1-based pairs [1,6] [2,5] [3,4] [7,12] [8,11] [9,10] [13,15] [16,18]; 14, 17, 19 fixed.
AFLW19_FLIP: tuple[int, ...] = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18)

AFLW19_NAMES: tuple[str, ...] = (
    "LeftBrowLeftCorner", "LeftBrowCenter", "LeftBrowRightCorner",
    "RightBrowLeftCorner", "RightBrowCenter", "RightBrowRightCorner",
    "LeftEyeLeftCorner", "LeftEyeCenter", "LeftEyeRightCorner",
    "RightEyeLeftCorner", "RightEyeCenter", "RightEyeRightCorner",
    "NoseLeft", "NoseCenter", "NoseRight",
    "MouthLeftCorner", "MouthCenter", "MouthRightCorner",
    "ChinCenter",
)

W300_OUTER_EYE_CORNERS = (36, 45)
W300_LEFT_EYE = range(36, 42)  # image-left eye
W300_RIGHT_EYE = range(42, 48)  # image-right eye

# Curves along which landmarks lie, for boundary heatmaps (AWing-style). Closed curves repeat
# their first index at the end, so every entry can be drawn as an open polyline.
W300_CURVES: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "left_brow": tuple(range(17, 22)),
    "right_brow": tuple(range(22, 27)),
    "nose_bridge": tuple(range(27, 31)),
    "nostrils": tuple(range(31, 36)),
    "left_eye_upper": (36, 37, 38, 39),
    "left_eye_lower": (39, 40, 41, 36),
    "right_eye_upper": (42, 43, 44, 45),
    "right_eye_lower": (45, 46, 47, 42),
    "upper_lip_outer": (48, 49, 50, 51, 52, 53, 54),
    "lower_lip_outer": (54, 55, 56, 57, 58, 59, 48),
    "upper_lip_inner": (60, 61, 62, 63, 64),
    "lower_lip_inner": (64, 65, 66, 67, 60),
}
