"""TrainSource: each worker's rows straight from Parquet, equal shards, nothing lost."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facebench.train.task import TrainSource


def _to_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": np.asarray(batch["x"], dtype=np.int64), "v": np.stack([np.asarray(v) for v in batch["v"]])}


@pytest.fixture
def split(tmp_path):
    path = tmp_path / "train.parquet"
    rows = 7
    pq.write_table(pa.table({"x": list(range(rows)), "v": [[float(i), -float(i)] for i in range(rows)],
                             "unused": ["a"] * rows}), path)
    return TrainSource(path, ("x", "v"), _to_arrays)


def test_shards_are_equal_and_cover_every_row(split):
    shards = [split.read_shard(rank, 3) for rank in range(3)]
    assert [len(s["x"]) for s in shards] == [3, 3, 3]  # ceil(7 / 3); two rows repeated to pad
    assert shards[0]["x"].tolist() == [0, 3, 6] and shards[1]["x"].tolist() == [1, 4, 0]
    assert shards[2]["x"].tolist() == [2, 5, 1]
    assert set(np.concatenate([s["x"] for s in shards]).tolist()) == set(range(7))
    for s in shards:  # columns stay aligned row by row
        np.testing.assert_array_equal(s["v"][:, 0], s["x"])


def test_one_worker_gets_every_row_once(split):
    assert split.read_shard(0, 1)["x"].tolist() == list(range(7))


def test_shard_bytes_from_the_first_row(split):
    assert split.shard_nbytes(1) == 7 * (8 + 16)   # int64 + two float64 per row
    assert split.shard_nbytes(2) == 4 * (8 + 16)


def test_missing_split_names_the_file(tmp_path):
    missing = TrainSource(tmp_path / "train.parquet", ("x",), _to_arrays)
    with pytest.raises(FileNotFoundError, match="train.parquet.*run `facebench prepare`"):
        missing.num_rows()
    with pytest.raises(FileNotFoundError, match="train.parquet.*run `facebench prepare`"):
        missing.shard_nbytes(2)
