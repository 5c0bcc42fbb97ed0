"""params.yaml validation: the repo's file loads; mistakes are named with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facebench.config import ConfigError, Paths, load_params, resolve_experiment

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_for_every_profile():
    for profile in ("smoke", "default", "full", "paper"):
        params = load_params(REPO / "params.yaml", profile=profile)
        for key in params.all_experiments:
            exp = resolve_experiment(params, key)
            assert exp.profile == profile
            assert (exp.heatmap is not None) == (key in params.heatmap_experiments)
    wing = resolve_experiment(load_params(REPO / "params.yaml"), "aflw_cnn6_wing")
    assert wing.loss_params["w"] == 10.0 and wing.loss_params["eps"] == 2.0  # the paper's defaults


def test_paper_profile_heatmaps_are_the_adaptive_wing_setup():
    params = load_params(REPO / "params.yaml", profile="paper")
    exp = resolve_experiment(params, "w300_hg_awing")
    hm = exp.heatmap
    assert (hm.input_size, hm.stacks, hm.features, hm.depth, hm.sigma) == (256, 4, 256, 4, 1.0)
    assert hm.weight_map and hm.boundary and hm.coordconv
    assert exp.train.optimizer == "rmsprop" and exp.train.lr == 1e-4
    assert exp.loss_params == {"weight": 1.0, "alpha": 2.1, "omega": 14.0, "epsilon": 1.0, "theta": 0.5}
    # The heatmap overrides do not leak into the Wing rows of the same profile.
    wing = resolve_experiment(params, "aflw_cnn6_wing")
    assert wing.heatmap is None and wing.train.optimizer == "adam" and wing.train.batch_size == 256
    ablation = resolve_experiment(params, "w300_hg_awing_no_map")
    assert not ablation.heatmap.weight_map and ablation.config_hash() != exp.config_hash()


def test_pdb_rows_take_the_profile_pdb_epochs():
    full = load_params(REPO / "params.yaml", profile="full")
    assert resolve_experiment(full, "aflw_cnn6_l1_pdb").train.epochs == full.active.train.pdb_epochs == 3
    assert resolve_experiment(full, "aflw_cnn6_l1").train.epochs == 8
    paper = load_params(REPO / "params.yaml", profile="paper")
    assert resolve_experiment(paper, "aflw_cnn6_l1_pdb").train.epochs == paper.active.train.epochs
    assert resolve_experiment(full, "aflw_cnn6_l1_pdb", epochs=5).train.epochs == 5  # CLI override wins


def test_the_quick_default_trains_every_comparison_and_full_the_whole_matrix():
    """The default keeps each paper's comparison (four losses on both datasets, the two-stage Wing
    system, the AWing losses and ablations, five heads, three MTCNN stages), one seed, no PDB rows; full
    and paper train all 47 rows and every seed."""
    default, full = (load_params(REPO / "params.yaml", profile=p) for p in ("default", "full"))
    trained = {k for k in default.all_experiments if default.trains(k)}
    assert {f"{d}_cnn6_{loss}" for d in ("w300", "aflw") for loss in ("l2", "l1", "smooth_l1", "wing")} <= trained
    assert {"w300_cnn67_wing", "aflw_cnn67_wing"} <= trained
    assert set(default.heatmap_experiments) | set(default.recognition_experiments) | set(default.mtcnn_experiments) \
        <= trained
    assert not any(default.all_experiments[k].pdb for k in trained)
    assert len(trained) == 25 and len(full.all_experiments) == 47
    assert all(full.trains(k) for k in full.all_experiments)
    assert default.seeds_of("aflw_cnn6_wing") == [0] and full.seeds_of("aflw_cnn6_wing") == [0, 1, 2]
    assert default.seeds_of("w300_cnn6_wing") is None


@pytest.mark.parametrize("mutate, fragment", [
    (lambda r: r["experiments"]["aflw_cnn6_l1"].update(profiles=["fast"]),
     "experiments.aflw_cnn6_l1.profiles: ['fast'] not among"),
    # a two-stage row the default trains needs its stage 1 trained there too
    (lambda r: r["experiments"]["aflw_cnn6_wing"].update(profiles=["full"]),
     "two_stage_experiments.aflw_cnn67_wing trains in ['default', 'full', 'paper', 'smoke'], but its stage1"),
    (lambda r: r["mtcnn_experiments"]["wider_pnet"].update(profiles=["paper"]),
     "'wider_pnet' of its cascade only in ['paper']"),
    (lambda r: r["profiles"]["default"].pop("seeds"), "profiles.default.seeds"),
])
def test_row_profiles_must_hold_together(tmp_path, mutate, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        load_params(_write(tmp_path, mutate))
    assert fragment in str(err.value)


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutate, fragment", [
    (lambda r: r.update(profile="fast"), "profile 'fast'"),
    (lambda r: r["experiments"]["aflw_cnn6_l1"].update(loss="l3"), "experiments.aflw_cnn6_l1.loss"),
    (lambda r: r["experiments"]["aflw_cnn6_l1"].update(dataset="wflw"), "experiments.aflw_cnn6_l1.dataset"),
    (lambda r: r["profiles"]["smoke"]["train"].update(epoch=3), "profiles.smoke.train.epoch"),
    (lambda r: r["profiles"]["smoke"]["train"].update(lr=-1), "profiles.smoke.train.lr"),
    (lambda r: r["heatmap_experiments"]["w300_hg_awing"].update(loss="l3"), "heatmap_experiments.w300_hg_awing.loss"),
    (lambda r: r["heatmap_experiments"]["w300_hg_awing"].update(boundry=False), "w300_hg_awing.boundry"),
    (lambda r: r["profiles"]["smoke"].pop("heatmaps"), "profiles.smoke.heatmaps is missing"),
    (lambda r: r["heatmap_sweeps"]["awing_alpha_omega"].update(experiment="aflw_cnn6_wing"),
     "heatmap_sweeps.awing_alpha_omega.experiment"),
    (lambda r: r["profiles"]["smoke"].pop("recognition"), "profiles.smoke.recognition is missing"),
    (lambda r: r["recognition_experiments"]["casia_cosface"].update(eval_dataset="ytf"),
     "recognition_experiments.casia_cosface.eval_dataset"),
    (lambda r: r["recognition_experiments"]["casia_cosface"].update(model="resnet"),
     "recognition_experiments.casia_cosface.model"),
    (lambda r: r["recognition_sweeps"]["cosface_margin"].update(experiment="w300_hg_awing"),
     "recognition_sweeps.cosface_margin.experiment"),
    (lambda r: r["heatmap_experiments"].update(casia_nsl=r["heatmap_experiments"]["w300_hg_mse"]),
     "'casia_nsl' is in both heatmap_experiments and recognition_experiments"),
])
def test_mistakes_name_the_file_and_key(tmp_path, mutate, fragment):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_config_hash_changes_with_loss_parameter():
    params = load_params(REPO / "params.yaml")
    a = resolve_experiment(params, "aflw_cnn6_wing")
    params.losses["wing"]["w"] = 8.0
    b = resolve_experiment(params, "aflw_cnn6_wing")
    assert a.config_hash() != b.config_hash()


def test_recognition_profiles_resolve_depth_and_schedule():
    """The paper profile carries the CosFace schedule; the CPU default shrinks the backbone only."""
    paper = load_params(REPO / "params.yaml", profile="paper")
    exp = resolve_experiment(paper, "casia_cosface")
    assert exp.backbone_depth == 20 and exp.eval_dataset == "lfw"
    t = exp.train
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size) == ("sgd", 0.1, 0.9, 0.0005, 512)
    assert t.lr_schedule == "step" and t.lr_steps == [17, 25, 29] and t.epochs == 31
    assert exp.loss_params == {"s": 64.0, "m": 0.35}
    default = load_params(REPO / "params.yaml", profile="default")
    assert resolve_experiment(default, "casia_sphereface").backbone_depth == 4
    assert resolve_experiment(default, "casia_sphereface").loss_params == {"m": 4}
    # the landmark rows keep their own schedule
    assert resolve_experiment(paper, "aflw_cnn6_l1").train.optimizer == paper.active.train.optimizer


def test_two_stage_rows_resolve_stage1_width_and_their_own_data():
    """A CNN-7 row names its CNN-6 stage 1, trains on the re-cropped set, and takes the profile's width."""
    paper = load_params(REPO / "params.yaml", profile="paper")
    exp = resolve_experiment(paper, "aflw_cnn67_wing")
    assert (exp.model, exp.stage1, exp.cnn7_width) == ("cnn7", "aflw_cnn6_wing", 1.0)
    paths = Paths(root=REPO)
    assert paths.training_data(exp) == REPO / "data" / "stage2" / "aflw_cnn67_wing" and exp.dataset == "aflw"
    assert exp.train.batch_size == paper.active.train.batch_size  # the Wing paper's schedule, as CNN-6
    default = load_params(REPO / "params.yaml", profile="default")
    assert resolve_experiment(default, "aflw_cnn67_wing").cnn7_width == 0.25
    assert paths.training_data(resolve_experiment(default, "aflw_cnn6_wing")) == REPO / "data" / "prepared" / "aflw"


@pytest.mark.parametrize("stage1,fragment", [("w300_cnn6_wing", "on dataset 'aflw'"),  # other dataset
                                             ("nope", "must be a CNN-6 row"),
                                             ("casia_cosface", "must be a CNN-6 row")])  # not in `experiments`
def test_two_stage_stage1_must_be_a_cnn6_row_of_the_same_dataset(tmp_path, stage1, fragment):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["two_stage_experiments"]["aflw_cnn67_wing"]["stage1"] = stage1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="two_stage_experiments.aflw_cnn67_wing.stage1") as err:
        load_params(path)
    assert fragment in str(err.value)


def test_storage_root_moves_data_runs_models_and_metrics_but_not_reports(tmp_path, monkeypatch):
    from facebench.config import storage_root

    params = load_params(REPO / "params.yaml")
    monkeypatch.delenv("FACEBENCH_STORAGE", raising=False)
    assert storage_root(params, tmp_path) is None  # the project itself
    assert storage_root(params.model_copy(update={"storage": "shared"}), tmp_path) == (tmp_path / "shared").resolve()
    monkeypatch.setenv("FACEBENCH_STORAGE", "/mnt/fb")  # the environment wins over params.yaml
    assert storage_root(params.model_copy(update={"storage": "shared"}), tmp_path) == Path("/mnt/fb")
    monkeypatch.setenv("FACEBENCH_STORAGE", "s3://bucket/fb")
    with pytest.raises(ConfigError, match="FACEBENCH_STORAGE = 's3://bucket/fb': expected a filesystem path"):
        storage_root(params, tmp_path)

    paths = Paths(root=tmp_path / "project", store=Path("/mnt/fb"))
    exp = resolve_experiment(params, "w300_cnn6_l2")
    assert paths.training_data(exp) == Path("/mnt/fb/data/prepared/w300")
    assert paths.run_dir("x", "r") == Path("/mnt/fb/runs/x/r")
    assert paths.model_weights("x") == Path("/mnt/fb/models/x/model.pt")
    assert paths.metrics_file("x") == Path("/mnt/fb/metrics/x.json")
    assert paths.reports == tmp_path / "project" / "reports"


def test_worker_restarts_default_to_three_on_a_cluster_only(monkeypatch):
    from facebench.train.ray_trainer import max_failures, on_cluster

    t = load_params(REPO / "params.yaml").active.train
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not on_cluster() and max_failures(t) == 0
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # a Jobs API address: not one to join
    assert not on_cluster() and max_failures(t) == 0
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert on_cluster() and max_failures(t) == 3
    assert max_failures(t.model_copy(update={"max_failures": 1})) == 1
