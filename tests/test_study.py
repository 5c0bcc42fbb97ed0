"""The claims study's cells (what each question trains) and its findings (hand-computed cases)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from facebench.config import ConfigError, Params, load_params
from facebench.study import best_on_validation, cells_of, compare, finding, findings, study_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def test_compare_hand_computed():
    # lower is better: means 2 and 5, sample sds 1 and 1 -> gain 3 beyond the spread 2
    got = compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], higher_is_better=False)
    assert (got["first_mean"], got["second_mean"], got["first_sd"], got["second_sd"]) == (2.0, 5.0, 1.0, 1.0)
    assert got["gain"] == 3.0 and got["spread"] == 2.0 and got["verdict"] == "yes"
    # the same numbers when higher is better: the paper's way is the other way
    assert compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], higher_is_better=True)["verdict"] == "reversed"
    # means 2 and 3.5, sds 1 and 1.5 (values 2, 3.5, 5): gain 1.5 within the spread 2.5
    within = compare([1.0, 2.0, 3.0], [2.0, 3.5, 5.0], higher_is_better=False)
    assert within["gain"] == 1.5 and within["spread"] == 2.5 and within["verdict"] == "no difference"
    # one seed each: no spread, so no verdict either way
    assert compare([1.0], [9.0], higher_is_better=False)["verdict"] == "one seed"


def _points(*verdicts: str) -> list[dict]:
    return [{"x": x, "verdict": v} for x, v in zip((1.0, 4.0, 16.0), verdicts)]


@pytest.mark.parametrize("verdicts, expected", [
    (("yes", "yes", "yes"), "holds everywhere"),
    (("no difference", "yes", "yes"), "holds from 4 on"),
    (("reversed", "no difference", "yes"), "holds from 16 on"),
    (("no difference", "yes", "no difference"), "holds at 4 only"),
    (("reversed", "reversed", "reversed"), "reversed at 1, 4, 16"),
    (("reversed", "no difference", "no difference"), "reversed at 1; no difference elsewhere"),
    (("no difference", "no difference", "no difference"), "no difference anywhere"),
    (("one seed", "one seed", "one seed"), "undecided"),
])
def test_finding_reads_along_the_axis(verdicts, expected):
    assert finding(_points(*verdicts)) == expected


def _record(panel, system, x, seed, test, val=None, higher=False):
    return {"panel": panel, "system": system, "x": x, "seed": seed, "test": test, "val": val,
            "metric": "test_test_nme", "higher_is_better": higher}


def test_findings_point_by_point():
    records = []
    # x=1: Wing 0.20 +- 0.01 against L2 0.10 +- 0.01 (reversed); x=4: Wing 0.05 against L2 0.08 (yes)
    for seed, (wing1, l21, wing4, l24) in enumerate([(0.19, 0.09, 0.04, 0.07), (0.20, 0.10, 0.05, 0.08),
                                                     (0.21, 0.11, 0.06, 0.09)]):
        records += [_record("aflw_small", "Wing", 1.0, seed, wing1), _record("aflw_small", "L2", 1.0, seed, l21),
                    _record("aflw_small", "Wing", 4.0, seed, wing4), _record("aflw_small", "L2", 4.0, seed, l24)]
    got = findings("wing", records)
    wing_l2 = next(f for f in got if (f["first"], f["second"]) == ("Wing", "L2"))
    assert [p["verdict"] for p in wing_l2["points"]] == ["reversed", "yes"]
    assert wing_l2["points"][0]["gain"] == pytest.approx(-0.10)
    assert wing_l2["points"][1]["gain"] == pytest.approx(0.03) and wing_l2["points"][1]["spread"] == pytest.approx(0.02)
    assert wing_l2["finding"] == "holds from 4 on"
    # L1 has no cells: its claims are left out, not invented
    assert all("L1" not in (f["first"], f["second"]) for f in got)


def test_best_on_validation_chooses_on_validation_not_test():
    records = [_record("margin", "CosFace", m, s, test, val, higher=True)
               for m, s, val, test in [(0.0, 0, 0.70, 0.90), (0.0, 1, 0.72, 0.90),
                                       (0.35, 0, 0.80, 0.60), (0.35, 1, 0.78, 0.62)]]
    choice = best_on_validation(records, "margin")
    assert choice["x"] == 0.35 and choice["val_mean"] == pytest.approx(0.79)
    assert choice["test_mean"] == pytest.approx(0.61)


def test_wing_cells(params):
    study = study_settings(params)
    everything = cells_of(params, "wing")
    cells = [c for c in everything if not c.panel.startswith("lr")]
    assert len(cells) == len(study.wing.rows) * len(study.wing.lengths) * len(study.seeds)
    # the learning-rate panel: the rows on lr_dataset at lr_length, each lr; the profile's own lr is the
    # length panel's cell under the same key (one training, drawn twice)
    lr_cells = [c for c in everything if c.panel.startswith("lr")]
    on_set = [r for r in study.wing.rows if study.wing.datasets[params.experiments[r].dataset] == study.wing.lr_dataset]
    assert len(lr_cells) == len(on_set) * len(study.wing.lrs) * len(study.seeds)
    base = params.profiles[study.profile].train
    for c in lr_cells:
        assert c.exp.train.lr == c.x and c.exp.train.epochs == base.epochs * study.wing.lr_length
        same = [d for d in cells if d.exp.key == c.exp.key]
        assert len(same) == (1 if c.x == base.lr else 0)
        assert not same or same[0].exp == c.exp
    for cell in cells:
        row = params.experiments[cell.exp.key.split("-")[1]]
        assert cell.exp.dataset == study.wing.datasets[row.dataset] == cell.panel
        assert cell.exp.dataset_config == params.datasets[cell.exp.dataset]
        assert cell.exp.train.epochs == params.profiles[study.profile].train.epochs * int(cell.x)
        assert cell.exp.train.seed == cell.seed and not cell.exp.train.export_model
        assert cell.exp.loss == row.loss
    assert len({c.exp.key for c in cells}) == len(cells)


def test_cosface_cells(params):
    study = study_settings(params).cosface
    cells = cells_of(params, "cosface")
    softmax = [c for c in cells if c.system == "Softmax"]
    # Softmax has no scale: one training per (identities, seed), drawn in every scale's panel
    assert len(softmax) == len(study.identities) * len(study_settings(params).seeds) * len(study.scales)
    assert len({c.exp.key for c in softmax}) == len(study.identities) * len(study_settings(params).seeds)
    for c in cells:
        if c.panel.startswith("s="):
            assert c.exp.dataset == study.identities[int(c.x)]
            if c.system != "Softmax":
                assert c.panel == f"s={c.exp.loss_params['s']:g}"
    margin = [c for c in cells if c.panel == "margin"]
    assert sorted({c.x for c in margin}) == sorted(study.margins)
    assert all(c.exp.loss == "cosface" and c.exp.loss_params["m"] == c.x for c in margin)
    assert all(c.exp.dataset == study.identities[study.margin_identities] for c in margin)
    base = params.profiles[study_settings(params).profile].recognition.train["epochs"]
    assert all(c.exp.train.epochs == base * study.margin_length for c in margin)


def test_awing_cells(params):
    study = study_settings(params).awing
    seeds = study.seeds or study_settings(params).seeds  # the question's own seeds, else the study's
    everything = cells_of(params, "awing")
    cells = [c for c in everything if not c.panel.startswith("boundary weight")]
    assert len(cells) == len(study.rows) * len(study.features) * len(study.lengths) * len(seeds)
    assert {c.system for c in cells} == {"AWing (full)", "no boundary", "no CoordConv", "no weight map"}
    for c in cells:
        assert c.panel == f"{c.exp.heatmap.features} features"
        row = params.heatmap_experiments[c.exp.key.split("-")[1]]
        assert (c.exp.heatmap.boundary, c.exp.heatmap.coordconv, c.exp.heatmap.weight_map) == (
            row.boundary, row.coordconv, row.weight_map)
        assert c.exp.heatmap.boundary_weight == 1.0
    # the boundary-weight panel: the full model at each weight against the one without a boundary (one
    # training per seed, drawn at every weight); the profile's weight is the first width's cell
    panel = [c for c in everything if c.panel.startswith("boundary weight")]
    assert {c.system for c in panel} == {"AWing (full)", "no boundary"}
    assert len(panel) == 2 * len(study.boundary_weights) * len(seeds)
    for c in panel:
        assert c.exp.heatmap.features == study.features[0]
        assert c.exp.train.epochs == params.profiles["default"].heatmaps.train["epochs"] * study.boundary_length
        if c.system == "AWing (full)":
            assert c.exp.heatmap.boundary_weight == c.x
    full_keys = {c.exp.key for c in panel if c.system == "AWing (full)"}
    assert len(full_keys) == len(study.boundary_weights) * len(seeds)
    assert len({c.exp.key for c in panel if c.system == "no boundary"}) == len(seeds)
    assert full_keys & {c.exp.key for c in cells} == {c.exp.key for c in panel if c.x == 1.0 and
                                                       c.system == "AWing (full)"}


def _raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _load(tmp_path: Path, raw: dict) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_study_settings_are_checked(tmp_path):
    raw = copy.deepcopy(_raw())
    raw["study"]["wing"]["rows"].append("aflw_cnn6_nope")
    with pytest.raises(ConfigError, match=r"study.wing.rows: 'aflw_cnn6_nope' is not one of"):
        study_settings(_load(tmp_path, raw))
    raw = copy.deepcopy(_raw())
    raw["study"]["cosface"]["identities"][999] = "casia_999"
    with pytest.raises(ConfigError, match=r"study.cosface.identities: dataset 'casia_999' is not one of"):
        study_settings(_load(tmp_path, raw))
    raw = copy.deepcopy(_raw())
    del raw["study"]["wing"]["datasets"]["w300"]
    with pytest.raises(ConfigError, match=r"no study set for w300_cnn6_l2's dataset 'w300'"):
        study_settings(_load(tmp_path, raw))
    raw = copy.deepcopy(_raw())
    raw["study"]["awing"]["lenghts"] = [1]
    with pytest.raises(ConfigError, match=r"study.awing.lenghts: Extra inputs are not permitted"):
        study_settings(_load(tmp_path, raw))


def test_a_sets_synth_overrides_are_checked(tmp_path):
    raw = copy.deepcopy(_raw())
    raw["datasets"]["aflw_small"]["synth"] = {"aflw_faces": -3}
    with pytest.raises(ConfigError, match=r"datasets.aflw_small: .*synth: aflw_faces"):
        _load(tmp_path, raw)
    raw["datasets"]["aflw_small"]["synth"] = {"aflw_fces": 3}
    with pytest.raises(ConfigError, match=r"synth: aflw_fces"):
        _load(tmp_path, raw)


def test_unknown_question(params):
    with pytest.raises(ConfigError, match="no study question 'mtcnn'; known: wing, cosface, awing"):
        cells_of(params, "mtcnn")


def test_a_question_left_out(tmp_path):
    raw = copy.deepcopy(_raw())
    del raw["study"]["awing"]
    params = _load(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"study.awing is not set"):
        cells_of(params, "awing")
    assert cells_of(params, "wing")  # the others are unaffected


def test_the_margin_sweep_is_set_against_m_zero():
    # m = 0: 0.70 +- 0.01; m = 0.35: 0.75 +- 0.01 (yes); m = 0.5: 0.705 +- 0.01 (within the spread 0.02)
    records = [_record("margin", "CosFace", m, s, base + d, higher=True)
               for m, base in ((0.0, 0.70), (0.35, 0.75), (0.5, 0.705)) for s, d in enumerate((-0.01, 0.0, 0.01))]
    got = [f for f in findings("cosface", records) if f["panel"] == "margin"]
    assert len(got) == 1 and (got[0]["first"], got[0]["second"]) == ("CosFace, m > 0", "m = 0 (NSL)")
    assert [(p["x"], p["verdict"]) for p in got[0]["points"]] == [(0.35, "yes"), (0.5, "no difference")]
    assert got[0]["points"][0]["gain"] == pytest.approx(0.05) and got[0]["finding"] == "holds at 0.35 only"
