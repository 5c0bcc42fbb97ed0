"""params.yaml validation: the repo's file loads; mistakes are named with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facebench.config import ConfigError, load_params, resolve_experiment

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_for_every_profile():
    for profile in ("smoke", "default", "paper"):
        params = load_params(REPO / "params.yaml", profile=profile)
        for key in params.experiments:
            exp = resolve_experiment(params, key)
            assert exp.profile == profile
    wing = resolve_experiment(load_params(REPO / "params.yaml"), "aflw_cnn6_wing")
    assert wing.loss_params["w"] == 10.0 and wing.loss_params["eps"] == 2.0  # the paper's defaults


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
