"""The strict image reader: truncated and damaged files are refused with the reason; whole files decode as
cv2.imread decodes them; a truncated JPEG in a dataset is quarantined, never prepared as a grey crop."""

from __future__ import annotations

import json
import re
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facebench.data.images import (
    TRUNCATED_JPEG, TRUNCATED_PNG, UNDECODABLE, ImageError, bytes_problem, image_sizes, read_image,
)

REPO = Path(__file__).resolve().parents[2]


def picture(h: int = 96, w: int = 128) -> np.ndarray:
    """Smooth noise: JPEG-compressible, with enough detail that a lost half shows."""
    rng = np.random.default_rng(7)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 2)


def encoded(ext: str, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, picture(), list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("params", [(), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
                                    (cv2.IMWRITE_JPEG_QUALITY, 100)],
                         ids=["baseline", "progressive", "restart markers", "quality 100"])
def test_whole_jpegs_pass_and_every_cut_is_refused(tmp_path, params):
    data = encoded(".jpg", *params)
    assert bytes_problem(data) is None
    assert bytes_problem(data + b"\x00" * 7) is None  # padding after the end-of-image marker is allowed
    for keep in (len(data) - 1, len(data) - 2, len(data) * 2 // 3, len(data) // 2, 4):
        assert bytes_problem(data[:keep]) == TRUNCATED_JPEG, keep
    path = tmp_path / "whole.jpg"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_image(path), cv2.imread(str(path)))


def test_an_end_marker_inside_a_thumbnail_does_not_complete_a_cut_image():
    """EXIF thumbnails are whole JPEGs (their own FF D9) inside an APP1 segment before the main image."""
    thumbnail = encoded(".jpg", cv2.IMWRITE_JPEG_QUALITY, 30)
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = encoded(".jpg")
    with_thumbnail = data[:2] + app1 + data[2:]
    assert bytes_problem(with_thumbnail) is None
    assert bytes_problem(with_thumbnail[:len(app1) + len(data) // 2]) == TRUNCATED_JPEG


def test_the_symptom_opencv_decodes_a_cut_jpeg_without_error(tmp_path):
    """Why the bytes are checked: cv2.imread returns a picture for a JPEG cut short, its lost rows grey."""
    data = encoded(".jpg")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:int(len(data) * 0.6)])
    lenient = cv2.imread(str(path))
    assert lenient is not None and lenient.shape == (96, 128, 3)
    with pytest.raises(ImageError) as err:
        read_image(path)
    assert err.value.reason == TRUNCATED_JPEG
    assert str(err.value) == f"{path}: {TRUNCATED_JPEG}"


def test_pngs_cut_or_corrupt_are_refused():
    data = encoded(".png")
    assert bytes_problem(data) is None
    for keep in (len(data) - 1, len(data) - 12, len(data) // 2, 20):
        assert bytes_problem(data[:keep]) == TRUNCATED_PNG, keep
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside the first IDAT chunk (IHDR is bytes 8..32, then IDAT's header)
    assert bytes_problem(bytes(flipped)) == ("corrupt PNG: chunk 'IDAT' at byte 33 fails its CRC check; "
                                             "expected an intact PNG file")
    # the CRC covers the chunk type and data: recomputed here by hand for the IHDR chunk
    assert zlib.crc32(data[12:29]) == int.from_bytes(data[29:33], "big")


def test_missing_empty_and_undecodable_files(tmp_path):
    cases = {"gone.jpg": None, "empty.jpg": b"", "text.jpg": b"not an image at all", "bmp.bmp": None}
    cv2.imwrite(str(tmp_path / "bmp.bmp"), picture())
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    sizes = image_sizes([tmp_path / n for n in cases])
    assert sizes == {tmp_path / "gone.jpg": "image file not found",
                     tmp_path / "empty.jpg": "empty file (0 bytes); expected an image",
                     tmp_path / "text.jpg": UNDECODABLE,
                     tmp_path / "bmp.bmp": (96, 128)}  # other formats: OpenCV decides


# --- a truncated JPEG in a synthetic dataset, through the prepare stage --------------------------------


@pytest.fixture()
def aflw_project(tmp_path):
    from facebench.config import Paths, load_params
    from facebench.stages import synth_dataset

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml", profile="smoke")
    paths = Paths(root=tmp_path)
    synth_dataset(params, "aflw", paths)
    return params, paths


def _cut_one_image(paths) -> str:
    """Cut the first training image to 60% on disk; its path relative to the dataset root."""
    root = paths.raw("aflw")
    image = sorted((root / "data" / "flickr").rglob("*.jpg"))[0]
    data = image.read_bytes()
    image.write_bytes(data[:int(len(data) * 0.6)])
    assert cv2.imread(str(image)) is not None  # OpenCV alone would have cropped it
    return image.relative_to(root).as_posix()


def _check_prepared(paths, source: str, stage: str, reason: str) -> None:
    """The face is in the manifest's quarantine with ``reason`` (a regular expression), in no split, and
    no crop has rows of one flat colour: with cv2.imread this 60% cut gave a crop 41% flat rows, every
    whole image's crop none."""
    from facebench.data.parquet import decode_crops, read_samples

    out = paths.prepared("aflw")
    manifest = json.loads((out / "manifest.json").read_text())
    entries = [q for q in manifest["quarantined"] if q["source"] == source]
    assert entries and all(q["stage"] == stage and re.fullmatch(reason, q["reason"]) for q in entries), entries
    for parquet in out.glob("*.parquet"):
        df = read_samples(parquet)
        assert not df["source"].eq(source).any(), parquet.name
        crops = decode_crops(df["image"], 128, 128, "raw_rgb8")
        flat_rows = (np.ptp(crops, axis=2).max(axis=-1) == 0).mean(axis=1)  # (N,) share of one-colour rows
        assert flat_rows.max() < 0.1, parquet.name
    assert str(paths.root) not in json.dumps(manifest["quarantined"])  # relative to the dataset root only


def test_truncated_jpeg_is_quarantined_by_the_reader(aflw_project):
    from facebench.stages import prepare_dataset

    params, paths = aflw_project
    source = _cut_one_image(paths)
    prepare_dataset(params, "aflw", paths)
    _check_prepared(paths, source, "read", r"record \d+ \(0-based row\): " + re.escape(TRUNCATED_JPEG))


def test_image_cut_after_reading_is_quarantined_at_preparation(aflw_project, monkeypatch):
    from facebench import stages

    params, paths = aflw_project
    read = stages.read_dataset
    cut: list[str] = []

    def read_then_cut(*args, **kwargs):
        result = read(*args, **kwargs)
        cut.append(_cut_one_image(paths))
        return result

    monkeypatch.setattr(stages, "read_dataset", read_then_cut)
    stages.prepare_dataset(params, "aflw", paths)
    _check_prepared(paths, cut[0], "prepare", re.escape(f"{TRUNCATED_JPEG} (at preparation)"))
