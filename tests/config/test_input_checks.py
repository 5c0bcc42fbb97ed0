"""Values a training worker would refuse are refused when params.yaml loads, one problem per key.

Each case changes the repo's params.yaml in one place and expects the exact message: the file, the
full key path and what was expected (issue 21, point 6).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facebench.config import ConfigError, load_params, resolve_experiment, resolve_sweep

REPO = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, mutate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, lambda: load_params(path)


CASES = {
    # loss parameters: names and ranges of loss_specs.py
    "wing w negative": (lambda r: r["losses"]["wing"].update(w=-5), "losses.wing.w: must be > 0, got -5"),
    "wing eps zero": (lambda r: r["losses"]["wing"].update(eps=0), "losses.wing.eps: must be > 0, got 0"),
    "unknown loss parameter": (lambda r: r["losses"]["wing"].update(omega=14),
                               "losses.wing.omega: unknown parameter; this loss takes eps, w, weight"),
    "weight zero": (lambda r: r["losses"]["l1"].update(weight=0), "losses.l1.weight: must be > 0, got 0"),
    "awing theta": (lambda r: r["losses"]["awing"].update(theta=-0.5), "losses.awing.theta: must be > 0, got -0.5"),
    "cosface m": (lambda r: r["losses"]["cosface"].update(m=-0.1), "losses.cosface.m: must be >= 0, got -0.1"),
    "arcface m": (lambda r: r["losses"]["arcface"].update(m=1.6), "losses.arcface.m: must be in [0, pi/2), got 1.6"),
    "sphereface m": (lambda r: r["losses"]["sphereface"].update(m=2.5),
                     "losses.sphereface.m: must be a positive integer, got 2.5"),
    "nsl s": (lambda r: r["losses"]["nsl"].update(s=0), "losses.nsl.s: must be > 0, got 0"),
    "hard ratio": (lambda r: r["losses"]["mtcnn"].update(hard_ratio=1.5),
                   "losses.mtcnn.hard_ratio: must be in (0, 1], got 1.5"),
    # the recognition task does not scale its head's loss: a weight would be dropped
    "head weight": (lambda r: r["losses"]["cosface"].update(weight=2),
                    "losses.cosface.weight: unknown parameter; this loss takes m, s"),
    "softmax params": (lambda r: r["losses"].update(softmax={"s": 30}),
                       "losses.softmax.s: unknown parameter; this loss takes no parameters"),
    "unknown loss": (lambda r: r["losses"].update(focal={}),
                     "losses.focal: no loss of that name; expected one of arcface, awing, cosface, hm_l1, hm_mse, "
                     "hm_wing, l1, l2, mtcnn, nsl, smooth_l1, softmax, sphereface, wing"),
    "weight map setting on a row without the map": (
        lambda r: r["losses"]["awing"].update(W=5.0),
        "heatmap_experiments.w300_hg_awing_no_map: losses.awing sets W (settings of the weighted loss map), "
        "but this row has weight_map: false"),
    # the kind of loss a task takes
    "heatmap loss on a landmark row": (
        lambda r: r["experiments"]["aflw_cnn6_wing"].update(loss="awing"),
        "experiments.aflw_cnn6_wing.loss: 'awing' is a loss of the heatmaps task; a landmarks row takes one of "
        "l2, l1, smooth_l1, wing"),
    "coordinate loss on a recognition row": (
        lambda r: r["recognition_experiments"]["casia_cosface"].update(loss="wing"),
        "recognition_experiments.casia_cosface.loss: 'wing' is a loss of the landmarks task; a recognition row "
        "takes one of softmax, nsl, sphereface, cosface, arcface"),
    "head on a detection row": (
        lambda r: r["mtcnn_experiments"]["wider_pnet"].update(loss="cosface"),
        "mtcnn_experiments.wider_pnet.loss: 'cosface' is a loss of the recognition task; a detection row takes "
        "one of mtcnn"),
    # sweep grids: keys of the base row's loss, values in range
    "grid key the loss lacks": (
        lambda r: r["sweeps"]["wing_w_eps"]["grid"].update(omega=[7.0, 14.0]),
        "sweeps.wing_w_eps.grid.omega: 'wing', the loss of aflw_cnn6_wing, has no parameter 'omega'; "
        "it takes eps, w, weight"),
    "grid value out of range": (
        lambda r: r["recognition_sweeps"]["cosface_margin"]["grid"].update(m=[0.35, -0.1]),
        "recognition_sweeps.cosface_margin.grid.m: must be >= 0, got -0.1"),
    "empty grid": (lambda r: r["heatmap_sweeps"]["awing_alpha_omega"]["grid"].update(theta=[]),
                   "heatmap_sweeps.awing_alpha_omega.grid.theta: no values; expected a list of at least one"),
    # train overrides: TrainSettings values, not only known keys
    "row lr": (lambda r: r["experiments"]["aflw_cnn6_wing"].update(train={"lr": -1}),
               "experiments.aflw_cnn6_wing.train.lr: Input should be greater than 0, got -1"),
    "row optimizer": (lambda r: r["two_stage_experiments"]["aflw_cnn67_wing"].update(train={"optimizer": "adagrad"}),
                      "two_stage_experiments.aflw_cnn67_wing.train.optimizer: Input should be 'adam', 'adamw', "
                      "'sgd' or 'rmsprop', got 'adagrad'"),
    "profile section type": (
        lambda r: r["profiles"]["paper"]["recognition"]["train"].update(batch_size="big"),
        "profiles.paper.recognition.train.batch_size: Input should be a valid integer, unable to parse string "
        "as an integer, got 'big'"),
    "onet override": (lambda r: r["profiles"]["default"]["mtcnn"]["onet_train"].update(epochs=0),
                      "profiles.default.mtcnn.onet_train.epochs: Input should be greater than 0, got 0"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_value_a_worker_would_refuse_is_refused_at_load(tmp_path, case):
    mutate, expected = CASES[case]
    path, load = _load(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load()
    assert str(err.value) == f"{path}: {expected}"


def test_unknown_train_key_lists_the_settings(tmp_path):
    path, load = _load(tmp_path, lambda r: r["heatmap_experiments"]["w300_hg_mse"].update(train={"epoch": 3}))
    with pytest.raises(ConfigError) as err:
        load()
    assert str(err.value).startswith(f"{path}: heatmap_experiments.w300_hg_mse.train.epoch: not a train setting; "
                                     "expected one of epochs, pdb_epochs, batch_size, lr,")


def test_every_problem_is_listed_under_its_key(tmp_path):
    def mutate(r):
        r["losses"]["wing"]["w"] = -5
        r["experiments"]["aflw_cnn6_l1"]["train"] = {"batch_size": 0}

    path, load = _load(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load()
    assert str(err.value).splitlines() == [
        f"{path}: 2 invalid parameters:",
        "  losses.wing.w: must be > 0, got -5",
        "  experiments.aflw_cnn6_l1.train.batch_size: Input should be greater than 0, got 0",
    ]


def test_valid_values_at_the_edges_load(tmp_path):
    def mutate(r):
        r["losses"]["cosface"]["m"] = 0  # NSL as a CosFace margin of 0 (the margin sweep starts there)
        r["losses"]["mtcnn"]["hard_ratio"] = 1  # keep every sample
        r["losses"]["arcface"]["easy_margin"] = True
        r["losses"]["awing"]["threshold"] = 0.3  # every awing row but the no-map ablation uses the map
        r["heatmap_experiments"].pop("w300_hg_awing_no_map")
        r["experiments"]["aflw_cnn6_wing"]["train"] = {"lr": 0.01, "optimizer": "sgd"}

    path, load = _load(tmp_path, mutate)
    params = load()
    assert resolve_experiment(params, "aflw_cnn6_wing").train.optimizer == "sgd"
    assert params.losses["arcface"]["easy_margin"] == 1.0


def test_command_line_overrides_are_checked_with_the_experiment_named():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError) as err:
        resolve_experiment(params, "aflw_cnn6_l1", epochs=0)
    assert str(err.value) == ("experiment 'aflw_cnn6_l1' with overrides {'epochs': 0}: "
                              "train.epochs: Input should be greater than 0, got 0")


def test_unknown_sweep_is_a_config_error():
    params = load_params(REPO / "params.yaml")
    assert resolve_sweep(params, "wing_w_eps").experiment == "aflw_cnn6_wing"
    with pytest.raises(ConfigError) as err:
        resolve_sweep(params, "nosuch")
    assert str(err.value) == ("params.yaml: no sweep 'nosuch'; known: ['awing_alpha_omega', 'cosface_margin', "
                              "'wing_w_eps']")


def test_loading_params_imports_no_torch():
    """load_params runs at the start of every command: its checks must not pull in torch."""
    import subprocess
    import sys

    code = ("import sys; from facebench.config import load_params; load_params(sys.argv[1]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "params.yaml")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
