"""Strict reading of dataset images: a damaged file is refused with the reason, never half-decoded.

OpenCV decodes a truncated JPEG without complaint: libjpeg prints "Premature end of JPEG file" on
stderr (naming no file) and fills the missing rows with grey, so a cut-off download became a crop
that was mostly flat grey. A truncated PNG may likewise come back partial. So the bytes are checked
before decoding: a JPEG must run, marker by marker, to its end-of-image marker (FF D9); a PNG must
hold whole chunks with correct CRCs up to its IEND chunk. Other formats are left to OpenCV. The
reasons name what is wrong and what was expected, without the path: callers put the file (relative
to the dataset root) beside them in the quarantine list.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRUNCATED_JPEG = "truncated JPEG: no end-of-image marker (FF D9); expected a complete JPEG file"
TRUNCATED_PNG = "truncated PNG: the file ends before its IEND chunk; expected a complete PNG file"
UNDECODABLE = "cv2.imread could not decode the image; expected a readable JPEG or PNG"


class ImageError(ValueError):
    """An image file that cannot be used: ``reason`` says why (no path), the message adds the path."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def read_image(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """The decoded image (BGR for the default flags, as cv2.imread), or ImageError when the file is
    missing, empty, truncated, corrupt or undecodable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "image file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read the file ({exc.strerror or exc})") from None
    problem = bytes_problem(data)
    if problem is not None:
        raise ImageError(path, problem)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise ImageError(path, UNDECODABLE)
    return image


def image_sizes(paths: list[Path]) -> dict[Path, tuple[int, int] | str]:
    """(height, width) of each image, or the reason it cannot be used (``read_image``'s).

    Decoding the whole file is the only reliable test of a corrupt image; OpenCV releases the GIL
    while decoding, so a thread pool makes this parallel.
    """
    unique = sorted(set(paths))

    def size(path: Path) -> tuple[int, int] | str:
        try:
            image = read_image(path)
        except ImageError as exc:
            return exc.reason
        return int(image.shape[0]), int(image.shape[1])

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(unique, pool.map(size, unique)))


def bytes_problem(data: bytes) -> str | None:
    """Why these file bytes are not a complete image, or None (formats other than JPEG and PNG: None)."""
    if not data:
        return "empty file (0 bytes); expected an image"
    if data.startswith(JPEG_SOI):
        return jpeg_problem(data)
    if data.startswith(PNG_SIGNATURE):
        return png_problem(data)
    return None


# Markers that stand alone (no length field): TEM and the restart markers RST0-7.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_SOS, _EOI = 0xDA, 0xD9


def jpeg_problem(data: bytes) -> str | None:
    """Walk the JPEG's segments from SOI to EOI; None if it gets there, else why not.

    Each marker segment carries its length, so it is skipped whole; after a start-of-scan (SOS) the
    entropy-coded data runs to the next marker that is not a stuffed FF 00 or a restart marker. The
    walk stops at the first EOI: trailing bytes after it (some cameras pad files) are allowed, an EOI
    inside an embedded thumbnail is not mistaken for the image's own, and a progressive JPEG's many
    scans are all walked.
    """
    n, pos = len(data), 2
    while True:
        if pos >= n:
            return TRUNCATED_JPEG
        if data[pos] != 0xFF:
            return f"corrupt JPEG: expected a marker (FF xx) at byte {pos}, found {data[pos]:02X}"
        while pos < n and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            return TRUNCATED_JPEG
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            return None
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            return TRUNCATED_JPEG
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            return f"corrupt JPEG: marker FF {marker:02X} at byte {pos - 2} has length {length}; expected >= 2"
        pos += length
        if pos > n:
            return TRUNCATED_JPEG
        if marker == _SOS:
            while True:  # entropy-coded data: FF is followed by 00 (a stuffed byte) or RSTn inside it
                i = data.find(b"\xff", pos)
                if i < 0 or i + 1 >= n:
                    return TRUNCATED_JPEG
                following = data[i + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos = i + 2
                elif following == 0xFF:
                    pos = i + 1
                else:
                    pos = i
                    break


def png_problem(data: bytes) -> str | None:
    """Walk the PNG's chunks to IEND checking each CRC; None if the file is whole, else why not."""
    n, pos = len(data), len(PNG_SIGNATURE)
    while True:
        if pos + 8 > n:
            return TRUNCATED_PNG
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 8 + length + 4
        if end > n:
            return TRUNCATED_PNG
        crc = int.from_bytes(data[end - 4:end], "big")
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            name = kind.decode("latin-1")
            return f"corrupt PNG: chunk {name!r} at byte {pos} fails its CRC check; expected an intact PNG file"
        if kind == b"IEND":
            return None
        pos = end
