"""The prepared sample schema (DESIGN.md, "The prepared sample") and its Parquet writer and readers.

Files are written atomically (a crash leaves the old file or none, never half a file) and
deterministically (no timestamps anywhere), so the same samples give the same bytes and DVC sees
no change when nothing changed. Dataset-level facts travel in the file metadata under b"facebench".
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"facebench"
REQUIRED_METADATA = ("dataset", "num_landmarks", "flip_permutation", "normaliser", "params_hash")
# How the image column is stored (file metadata "image_encoding"). Raw RGB rows (H*W*3 bytes, zstd
# compressed by Parquet) cost no decoding when training streams them; "encoded" is PNG or JPEG.
RAW_RGB8 = "raw_rgb8"
ENCODED = "encoded"
ROW_GROUP_SIZE = 512  # small groups: Ray Data can split a file across readers, memory stays bounded

SAMPLE_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),       # crop pixels: raw RGB8 or PNG/JPEG (metadata)
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("landmarks", pa.list_(pa.float32())),          # x0, y0, x1, y1, ... crop pixels
    pa.field("visible", pa.list_(pa.bool_())),
    pa.field("bbox", pa.list_(pa.float32())),               # x, y, w, h crop pixels
    pa.field("norm", pa.float32()),                         # NME normaliser, crop pixels
    pa.field("identity", pa.int32()),                       # class index; null for landmark sets
    pa.field("source", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("pose", pa.float32()),                         # |b| on the PDB pose component; null if none
    pa.field("pdb_copy", pa.int16(), nullable=False),
])


def to_table(rows: pa.Table | Mapping[str, list]) -> pa.Table:
    """Columns (a table, or a dict of equal-length lists) -> a table of exactly SAMPLE_SCHEMA."""
    if isinstance(rows, pa.Table):
        missing = [n for n in SAMPLE_SCHEMA.names if n not in rows.column_names]
        if missing:
            raise ValueError(f"sample table lacks columns {missing}")
        return rows.select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)
    missing = [n for n in SAMPLE_SCHEMA.names if n not in rows]
    if missing:
        raise ValueError(f"sample rows lack columns {missing}")
    return pa.Table.from_pydict({n: rows[n] for n in SAMPLE_SCHEMA.names}, schema=SAMPLE_SCHEMA)


def write_samples(path: Path, rows: pa.Table | Mapping[str, list] | Iterable[pa.Table | Mapping[str, list]],
                  metadata: dict[str, Any]) -> None:
    """Write samples (one table, or an iterable of chunks to bound memory) with dataset metadata.

    ``metadata`` must name the dataset, num_landmarks, flip_permutation, the normaliser's definition
    and the params hash; it is stored as sorted-key JSON so equal metadata gives equal bytes.
    """
    path = Path(path)
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"{path}: metadata lacks {missing}; expected all of {list(REQUIRED_METADATA)}")
    encoded = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
    schema = SAMPLE_SCHEMA.with_metadata({METADATA_KEY: encoded})
    chunks = [rows] if isinstance(rows, (pa.Table, Mapping)) else rows
    _write_atomic(path, schema, (to_table(chunk).replace_schema_metadata(schema.metadata) for chunk in chunks))


def write_table(path: Path, table: pa.Table) -> None:
    """Any table (e.g. LFW's pairs) written like the samples: whole or not at all, no timestamps."""
    _write_atomic(Path(path), table.schema, [table])


def _write_atomic(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=False) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        os.chmod(tmp, 0o644)  # mkstemp makes files owner-only; outputs are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metadata(path: Path) -> dict[str, Any]:
    """The b"facebench" metadata of a prepared file (dataset, num_landmarks, flip_permutation, ...)."""
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: no {METADATA_KEY.decode()} metadata; expected a file written by write_samples")
    return json.loads(meta[METADATA_KEY])


def read_samples(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A prepared split as a DataFrame (list columns hold numpy arrays)."""
    return pq.read_table(path, columns=columns).to_pandas()


def decode_crops(images: Any, height: int, width: int, encoding: str, where: str = "") -> np.ndarray:
    """An image column's values -> uint8 (N, H, W, 3) RGB. ``where`` names the file in errors."""
    values = list(images)
    if encoding == RAW_RGB8:
        expected = height * width * 3
        for i, v in enumerate(values):
            if len(v) != expected:
                raise ValueError(f"{where}: row {i} image has {len(v)} bytes; expected {expected} "
                                 f"(raw RGB8 {height}x{width})")
        joined = bytearray().join(values)  # one copy, and a writable one (torch.from_numpy wants that)
        return np.frombuffer(joined, dtype=np.uint8).reshape(len(values), height, width, 3)
    if encoding != ENCODED:
        raise ValueError(f"{where}: image_encoding {encoding!r}; expected {RAW_RGB8!r} or {ENCODED!r}")
    out = np.empty((len(values), height, width, 3), dtype=np.uint8)
    for i, v in enumerate(values):
        bgr = cv2.imdecode(np.frombuffer(v, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (height, width):
            got = "undecodable bytes" if bgr is None else f"shape {bgr.shape[:2]}"
            raise ValueError(f"{where}: row {i} image is {got}; expected a {height}x{width} PNG or JPEG")
        out[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return out
