"""`facebench bench`: every setting is measured and reported; bad requests are refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from facebench.bench import bench_landmark_model, run_bench
from facebench.cli import app
from facebench.papers.mtcnn import REPO_ROOT, default_weights_dir

HAS_MTCNN = ((default_weights_dir() / "onet.pt").is_file()
             and (REPO_ROOT / ".." / "shared" / "images" / "astronaut.png").is_file())


def test_landmark_models_report_a_rate_and_a_latency():
    row = bench_landmark_model("hourglass", torch.device("cpu"), batch=2, seconds=0.01,
                               stacks=1, features=32, input_size=64)
    assert row["input"] == 64 and row["batch"] == 2 and row["calls"] >= 3
    assert row["images_per_s"] > 0 and row["median_latency_ms"] > 0


@pytest.mark.skipif(not HAS_MTCNN, reason="published MTCNN weights / test image not available (../shared)")
def test_bench_command_covers_every_model_and_batch(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "cnn6", "mtcnn", "--device", "cpu", "--batch-size", "1",
                                      "--batch-size", "2", "--seconds", "0.01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [(r["model"], r["batch"]) for r in report["results"]] == [("cnn6", 1), ("cnn6", 2), ("mtcnn", 1),
                                                                      ("mtcnn", 2)]
    mtcnn = report["results"][2]
    assert mtcnn["input"] == [640, 480] and mtcnn["min_face"] == 20
    assert mtcnn["faces_per_frame"] == [1]  # the letterboxed astronaut: one face
    assert all(r["images_per_s"] > 0 for r in report["results"])


def test_bench_command_for_a_landmark_model(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "cnn6", "--device", "cpu", "--batch-size", "2", "--seconds", "0.01",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["device"], r["batch"]) for r in rows] == [("cnn6", "cpu", 2)]


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        run_bench(["resnet"], ["cpu"], [1], 0.01)
    result = CliRunner().invoke(app, ["bench", "resnet", "--device", "cpu"])
    assert result.exit_code == 2 and "unknown model" in result.output
