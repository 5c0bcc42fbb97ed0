"""The report as a reader meets it: the summary's verdicts, cost per row, links to the MLflow UI, anchors,
captions, ties in a sweep, figures whose legends are never cut and one style per (loss, system)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image as PILImage

from facebench import tracking
from facebench.config import load_params, resolve_experiment
from facebench.papers.awing.task import variant
from facebench.report import build_report, cells, document, figures, sweeps
from facebench.report.summary import verdict
from facebench.train import identity
from facebench.train.ray_trainer import TrainOutcome

REPO = Path(__file__).resolve().parents[2]


def _row(**values) -> pd.Series:
    return pd.Series({f"metrics.{k}" if not k.startswith("sd.") else k: v for k, v in values.items()})


def test_verdict_weighs_the_difference_against_the_seeds_spread():
    # lower is better: 0.10 against 0.12 is a gain of 2.00 points
    assert verdict(_row(nme=0.10), _row(nme=0.12), "nme", True) == "**yes** (by 2.00; one seed, no spread)"
    assert verdict(_row(nme=0.12), _row(nme=0.10), "nme", True) == "**no** (by 2.00; one seed, no spread)"
    assert verdict(_row(nme=0.10), _row(nme=0.10), "nme", True) == "no difference (equal)"
    # spread = 0.006 + 0.005 = 1.10 points: a 1.00-point gain is within it, a 2.00-point gain is not
    a = pd.Series({"metrics.nme": 0.10, "sd.nme": 0.006})
    assert verdict(a, pd.Series({"metrics.nme": 0.11, "sd.nme": 0.005}), "nme", True) == \
        "no difference (within the seeds' spread 1.10)"
    assert verdict(a, pd.Series({"metrics.nme": 0.12, "sd.nme": 0.005}), "nme", True) == \
        "**yes** (by 2.00, spread 1.10)"
    # higher is better (accuracy)
    assert verdict(_row(acc=0.9), _row(acc=0.8), "acc", False).startswith("**yes** (by 10.00")
    assert verdict(_row(acc=0.9), pd.Series(dtype=float), "acc", False) == cells.DASH


def test_cost_of_a_training_is_summed_over_its_epochs():
    history = [{"epoch_s": 10.0, "train_s": 8.0, "images_per_s": 100.0, "world_size": 2},
               {"epoch_s": 20.0, "train_s": 16.0, "images_per_s": 200.0, "world_size": 2}]
    gpu = TrainOutcome(metrics=history[-1], evaluation={}, checkpoint_dir=Path("."), state_dict={}, history=history,
                       device="NVIDIA H100 80GB HBM3 x2")
    cost = gpu.cost()
    assert cost["train_wall_s"] == pytest.approx(30.0)
    assert cost["train_images_per_s"] == pytest.approx((8 * 100 + 16 * 200) / 24)  # images / training seconds
    assert cost["gpu_hours"] == pytest.approx(30.0 * 2 / 3600)
    cpu = TrainOutcome(metrics=history[-1], evaluation={}, checkpoint_dir=Path("."), state_dict={}, history=history,
                       device="CPU Intel Xeon (2 cores) x1")
    assert "gpu_hours" not in cpu.cost()
    old = TrainOutcome(metrics={}, evaluation={}, checkpoint_dir=Path("."), state_dict={},
                       history=[{"images_per_s": 5.0}], device="")
    assert old.cost() == {}  # trained before wall times were kept: nothing made up


def test_cost_cell_and_wall_text():
    assert cells.cost_cell(_row(train_wall_s=95.0, train_images_per_s=412.4)) == "95 s, 412 img/s"
    assert cells.cost_cell(_row(train_wall_s=600.0, train_images_per_s=1500.0, gpu_hours=0.3333)) == \
        "10.0 min, 1,500 img/s, 0.333 GPU-h"
    assert cells.cost_cell(_row(val_nme=0.1)) == cells.DASH
    assert cells.wall_text(9000.0) == "2.5 h"


def test_run_links_resolve_to_the_ui_or_stay_plain_text():
    doc = [document.Heading(2, "Runs"), document.Para("run " + cells.short("abcdef0123456789", "7") + " and [x](#runs)"
                                                  + " and " + cells.short("0123456789abcdef"))]
    md = document.to_markdown(doc, "http://127.0.0.1:5000/")
    url = "http://127.0.0.1:5000/#/experiments/7/runs/abcdef0123456789?workflowType=machine_learning"
    assert f"[`abcdef01`]({url})" in md  # the run page, in the UI's model-training view
    assert "[`01234567`](http://127.0.0.1:5000/#/runs/0123456789abcdef)" in md  # experiment unknown: the UI finds it
    assert "[x](#runs)" in md  # an anchor link stays as it is
    assert "run `abcdef01` and" in document.to_markdown(doc)  # no UI configured: plain run id
    page = document.to_html(doc, {}, "http://127.0.0.1:5000")
    assert f'<a href="{url}"><code>abcdef01</code></a>' in page
    assert '<h2 id="runs">Runs</h2>' in page and '<a href="#runs">x</a>' in page


@pytest.mark.parametrize("text,expected", [
    ("300-W (`w300`)", "300-w-w300"),
    ("Wing loss paper: the paper's tables", "wing-loss-paper-the-papers-tables"),
    ("Face recognition: CASIA-WebFace to LFW (CosFace paper)", "face-recognition-casia-webface-to-lfw-cosface-paper"),
])
def test_anchors_are_githubs(text, expected):
    assert document.anchor(text) == expected


def test_ties_in_a_sweep_are_said_outright():
    group = pd.DataFrame({"loss.m": [0.0, 0.15, 0.25], "loss.s": [64.0, 64.0, 64.0]})
    scored = pd.Series([0.69, 0.6957, 0.6957])
    (note,) = sweeps.tie_note(group, ["loss.m", "loss.s"], scored)
    assert note.text.startswith("Ties: 2 trials score exactly 69.57 (m=0.15, s=64; m=0.25, s=64).")
    assert sweeps.tie_note(group, ["loss.m", "loss.s"], pd.Series([0.1, 0.2, 0.3])) == []


def _ced(nme: float) -> pd.DataFrame:
    t = np.linspace(0.0, 0.1, 51)
    return pd.DataFrame({"threshold": t, "fraction": np.clip(t / (2 * nme), 0, 1)})


def test_a_long_legend_widens_the_image_instead_of_being_cut():
    def png(label: str) -> PILImage.Image:
        curves = [(f"{label} {i}", _ced(0.02 + 0.01 * i), figures.curve_style("l2", False)) for i in range(13)]
        return PILImage.open(io.BytesIO(figures.ced_figure("t", curves))).convert("L")

    short, long = png("CNN-6 L2"), png("Hourglass, no CoordConv AWing (heatmap) " * 4)
    assert long.width > short.width  # the image grows with the legend rather than cutting it
    for image in (short, long):
        pixels = np.asarray(image)
        assert (pixels[:, -3:] > 250).all() and (pixels[-3:, :] > 250).all()  # nothing touches the edges


def test_every_default_curve_has_its_own_colour_and_line_style():
    params = load_params(REPO / "params.yaml")
    styles = {}
    for key, exp in params.all_experiments.items():
        if exp.task not in ("landmarks", "heatmaps"):
            continue
        resolved = resolve_experiment(params, key)
        style = figures.curve_style(exp.loss, bool(getattr(exp, "pdb", False)), variant(resolved.heatmap) if resolved.heatmap else "", exp.model)
        styles.setdefault((exp.dataset, str(style)), []).append(key)
    assert {k: v for k, v in styles.items() if len(v) > 1} == {}


def _run(client, exp_id, key, *, model, loss, variant_="", nme, wall, code="0123456789abcdef", end=5_000):
    tags = {"facebench.kind": "train", "facebench.experiment": key, "facebench.paper": "awing" if
            model == "hourglass" else "wing", "facebench.task": "heatmaps" if model == "hourglass" else "landmarks",
            "facebench.dataset": "w300", "facebench.model": model, "facebench.loss": loss, "facebench.pdb": "false",
            "facebench.variant": variant_, "facebench.profile": "smoke", "facebench.code_version": code,
            "facebench.device": "CPU Test (2 cores) x1"}
    tags["facebench.code_hash"] = identity.code_hash(identity.training_modules(tags["facebench.task"]))  # current
    run_id = client.create_run(exp_id, run_name=key, tags=tags, start_time=1_000).info.run_id
    tracking.log_metrics(client, run_id, {"val_nme": nme, "test_full_nme": nme, "test_full_nme_ip": 0.7 * nme,
                                          "train_wall_s": wall, "train_images_per_s": 100.0}, step=1)
    client.set_terminated(run_id, status="FINISHED", end_time=end)
    return run_id


def test_summary_cost_figure_provenance_and_captions(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    wing, awing = (tracking.get_or_create_experiment(client, p, tmp_path) for p in ("wing", "awing"))
    ids = {"l2": _run(client, wing, "w300_cnn6_l2", model="cnn6", loss="l2", nme=0.30, wall=50.0),
           "wing": _run(client, wing, "w300_cnn6_wing", model="cnn6", loss="wing", nme=0.28, wall=60.0,
                        code="fedcba9876543210"),
           "mse": _run(client, awing, "w300_hg_mse", model="hourglass", loss="hm_mse", nme=0.31, wall=200.0),
           "awing": _run(client, awing, "w300_hg_awing", model="hourglass", loss="awing", nme=0.26, wall=210.0,
                         end=86_400_000 + 5)}
    out = build_report(uri, tmp_path / "none", tmp_path / "reports", "smoke", ["w300"],
                       {"commit": "0123456789abcdef", "data": "synthetic (procedural faces)"},
                       "http://127.0.0.1:5000")
    md = Path(out["markdown"]).read_text()
    # the header: commit, profile, data, the newest run's end date (1970-01-02 from end_time 86,400,005 ms)
    ui = "http://127.0.0.1:5000/#/experiments/{}?workflowType=machine_learning"
    assert md.splitlines()[2] == ("Report of commit `01234567`; profile `smoke`; data: synthetic (procedural faces);"
                                  f" newest run finished 1970-01-02; MLflow: [`facebench/awing`]({ui.format(awing)}),"
                                  f" [`facebench/wing`]({ui.format(wing)}).")
    # the summary comes before everything else, with hand-computed verdicts and links to the evidence
    assert md.index("## Summary") < md.index("## How to read this")
    assert ("| CNN-6: Wing below L2, 300-W full (ip) NME | — | Wing 19.60 vs L2 21.00 | **yes** (by 1.40; one seed,"
            " no spread) | [detail](#wing-loss-paper-the-papers-tables) |") in md
    assert ("| AWing below MSE on heatmaps, 300-W full NME (io) | — | AWing 26.00 vs MSE 31.00 | **yes** (by 5.00;"
            " one seed, no spread) | [detail](#300-w-w300) |") in md
    page = Path(out["html"]).read_text()
    for target in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{target}"' in page, target  # every anchor link lands on a heading
    # each run id links to its run in the UI
    assert (f"[`{ids['awing'][:8]}`](http://127.0.0.1:5000/#/experiments/{awing}/runs/{ids['awing']}"
            "?workflowType=machine_learning)") in md
    # cost: per row, and the device named once under the table
    assert "| 50 s, 100 img/s |" in md
    assert "| 3.5 min, 100 img/s |" in md
    assert "on CPU Test (2 cores) x1." in md
    # the run from another commit is flagged in the run list, with a note
    runs = md[md.index("## Runs"):]
    assert "`fedcba98` §" in runs and "§ trained at another commit than this report's (`01234567`): " \
        "`w300_cnn6_wing`." in runs
    # the accuracy-against-cost figure, and a caption under every figure
    assert (tmp_path / "reports" / "figures" / "cost.png").is_file()
    images = re.findall(r"!\[([^\]]*)\]\(figures/([^)]+)\)\n\n\*([^*]+)\*", md)
    assert {name for _, name, _ in images} >= {"cost.png"}
    assert all(len(caption) > 40 for _, _, caption in images)
