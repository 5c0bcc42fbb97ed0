"""The prepared sample schema (DESIGN.md, "The prepared sample") and its Parquet writer and readers.

Files are written atomically (a crash leaves the old file or none, never half a file) and
deterministically (no timestamps anywhere), so the same samples give the same bytes and DVC sees
no change when nothing changed. Dataset-level facts travel in the file metadata under b"facebench", among
them the prepared set's ``content_hash`` (``ContentHash``): what the set holds, independent of how Parquet
stored it, so the manifest, every file of the set and a run's data identity name the same thing.
"""

from __future__ import annotations

import hashlib
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
REQUIRED_METADATA = ("dataset", "num_landmarks", "flip_permutation", "normaliser", "params_hash", "content_hash")
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


def write_table(path: Path, table: pa.Table, metadata: dict[str, Any] | None = None) -> None:
    """Any table (e.g. LFW's pairs, a WIDER scene index) written like the samples: whole or not at all, no
    timestamps; ``metadata`` (e.g. the set's content hash) goes under b"facebench" beside the table's own."""
    if metadata is not None:
        encoded = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: encoded})
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


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every Parquet file in ``folder``, by name, read in blocks: the manifest's ``files`` (the bytes
    DVC and a run's data identity see, beside the content hash of what they hold)."""
    out = {}
    for path in sorted(Path(folder).glob("*.parquet")):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        out[path.name] = digest.hexdigest()
    return out


def read_metadata(path: Path) -> dict[str, Any]:
    """The b"facebench" metadata of a prepared file (dataset, num_landmarks, flip_permutation, ...)."""
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path}: no {METADATA_KEY.decode()} metadata; expected a file written by write_samples "
                         "or write_table with metadata")
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


# ---------------------------------------------------------------------------------------------------
# The content hash of a prepared set.

CONTENT_HASH_VERSION = 1


class ContentHash:
    """SHA-256 of what a prepared set holds: every split's rows, in order, and the preparation params.

    Definition (version ``CONTENT_HASH_VERSION``). Each column of a split feeds three SHA-256 streams, row
    by row in row order:

    * validity: one byte per row, 1 for a value, 0 for a null;
    * lengths (list, binary and string columns): the item count or byte length (UTF-8 for strings) as
      int64 little-endian, 0 for a null;
    * values: the values as little-endian bytes at the column's width (booleans one byte; a null scalar as
      zero), list items flattened in order, binary and string bytes concatenated.

    The column's digest is the SHA-256 of the JSON ``[name, type, validity, lengths, values]`` (hex digests;
    the type as ``_type_name`` spells it: Arrow's, without the name of a list's item field, which a Parquet
    round trip renames); the set's hash is the SHA-256 of the sorted-key, compact JSON ``{"params": params, "splits":
    {split: {"rows": n, "columns": [[name, digest], ...]}}, "version": CONTENT_HASH_VERSION}``.

    Why this and not the files' bytes: it is computed from the rows before anything is written (so it can
    travel inside the files' own metadata), and it does not move with Parquet's compression, row groups,
    writer version or the split into chunks (streams are concatenations in row order), only with the
    rows, their order, their types and the params. The files' sha256 stay in the manifest beside it.
    """

    def __init__(self, params: Mapping[str, Any]):
        self.params = json.loads(json.dumps(dict(params), sort_keys=True))  # plain JSON values, checked now
        self.splits: dict[str, dict[str, Any]] = {}

    def add(self, split: str, rows: pa.Table | Mapping[str, list] | Iterable[pa.Table | Mapping[str, list]]) -> None:
        """Hash one split: a table, sample columns (``to_table``), or an iterable of such chunks."""
        if split in self.splits:
            raise ValueError(f"split {split!r} hashed twice; expected each split once")
        chunks = [rows] if isinstance(rows, (pa.Table, Mapping)) else rows
        columns: dict[str, _ColumnDigest] | None = None
        count = 0
        for chunk in chunks:
            table = chunk if isinstance(chunk, pa.Table) else to_table(chunk)
            if columns is None:
                columns = {f.name: _ColumnDigest(f) for f in table.schema}
            elif list(columns) != table.column_names:
                raise ValueError(f"split {split!r}: a chunk has columns {table.column_names}; expected {list(columns)}")
            for name, digest in columns.items():
                for array in table.column(name).chunks:
                    digest.update(array)
            count += table.num_rows
        self.splits[split] = {"rows": count,
                              "columns": [[n, d.hexdigest()] for n, d in (columns or {}).items()]}

    def hexdigest(self) -> str:
        document = {"params": self.params, "splits": self.splits, "version": CONTENT_HASH_VERSION}
        return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_hash(params: Mapping[str, Any], splits: Mapping[str, Any]) -> str:
    """``ContentHash`` of whole splits at once: split name -> a table, sample columns, or chunks of them."""
    hasher = ContentHash(params)
    for split, rows in splits.items():
        hasher.add(split, rows)
    return hasher.hexdigest()


class _ColumnDigest:
    """The three streams of one column (``ContentHash``)."""

    def __init__(self, field: pa.Field):
        self.name, self.type = field.name, field.type
        self.valid, self.lengths, self.values = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()

    def update(self, array: pa.Array) -> None:
        t = array.type
        self.valid.update(np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            import pyarrow.compute as pc

            self.lengths.update(_le(pc.list_value_length(array).fill_null(0), np.dtype(np.int64)))
            items = array.flatten()
            if items.null_count:
                raise ValueError(f"column {self.name!r}: null items inside lists have no content-hash encoding")
            self.values.update(_scalar_bytes(items, self.name))
        elif (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
              or pa.types.is_string(t) or pa.types.is_large_string(t)):
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in array.to_pylist()]
            self.lengths.update(np.array([0 if v is None else len(v) for v in values], dtype="<i8").tobytes())
            self.values.update(b"".join(v for v in values if v is not None))
        else:
            self.values.update(_scalar_bytes(array, self.name))

    def hexdigest(self) -> str:
        parts = [self.name, _type_name(self.type), self.valid.hexdigest(), self.lengths.hexdigest(),
                 self.values.hexdigest()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _type_name(t: pa.DataType) -> str:
    """Arrow's name of a type, lists spelt without their item field's name ("item" or "element")."""
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{_type_name(t.value_type)}>[{t.list_size}]"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{'large_' if pa.types.is_large_list(t) else ''}list<{_type_name(t.value_type)}>"
    return str(t)


def _scalar_bytes(array: pa.Array, column: str) -> bytes:
    """Little-endian bytes of a boolean or numeric array, nulls as zero."""
    t = array.type
    if pa.types.is_boolean(t):
        return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes()
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = array.fill_null(0).to_numpy(zero_copy_only=False)
        return _le(values, values.dtype)
    raise TypeError(f"column {column!r}: type {t} has no content-hash encoding (expected numbers, booleans, "
                    "strings, binary or lists of numbers)")


def _le(values: Any, dtype: np.dtype) -> bytes:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(np.asarray(values, dtype=dtype.newbyteorder("<"))).tobytes()
