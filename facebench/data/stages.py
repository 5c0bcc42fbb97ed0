"""Dataset stages: which generator writes a synthetic set, which reader reads a format.

Plain dispatch on the dataset's ``format`` so a reader can see where each format lives.
"""

from __future__ import annotations

import sys
from typing import Any

from facebench.config import IDENTITY_FORMATS, ConfigError, Params, Paths, dataset_root
from facebench.data.types import ReadResult


def synth_dataset(params: Params, name: str, paths: Paths) -> dict[str, Any]:
    """Write the procedural stand-in for dataset ``name`` in its official layout."""
    from facebench.data import synth

    cfg = _dataset(params, name)
    if cfg.source != "synth":
        raise ConfigError(f"params.yaml: datasets.{name}.source is {cfg.source!r}; synth writes only 'synth' sets")
    s = params.active.synth
    root = dataset_root(paths, name, cfg)
    seed = params.seed * 1000 + cfg.seed
    print(f"[synth {name}] writing {cfg.format} layout under {root}", file=sys.stderr, flush=True)
    if cfg.format == "w300":
        return synth.synth_w300(root, synth.w300_counts(s.w300_scale), seed=seed, image_size=s.image_size)
    if cfg.format == "aflw_full":
        return synth.synth_aflw(root, s.aflw_faces, seed=seed, image_size=s.image_size)
    if cfg.format == "casia":
        from facebench.data.synth_identities import synth_casia

        return synth_casia(root, s.casia_identities, tuple(s.casia_images), seed=seed)
    if cfg.format == "lfw":
        from facebench.data.synth_identities import synth_lfw

        return synth_lfw(root, s.lfw_folds, s.lfw_pairs_per_fold, s.lfw_people_per_fold, seed=seed)
    raise ConfigError(f"params.yaml: datasets.{name}.format {cfg.format!r} has no generator")


def read_dataset(params: Params, name: str, paths: Paths) -> ReadResult:
    cfg = _dataset(params, name)
    root = dataset_root(paths, name, cfg)
    if cfg.format == "w300":
        from facebench.data.formats.w300 import read_w300

        return read_w300(root)
    if cfg.format == "aflw_full":
        from facebench.data.formats.aflw import read_aflw_full

        return read_aflw_full(root)
    raise ConfigError(f"params.yaml: datasets.{name}.format {cfg.format!r} has no reader")


def prepare_dataset(params: Params, name: str, paths: Paths) -> dict[str, Any]:
    """Official layout -> data/prepared/<name>/<split>.parquet + manifest.json."""
    from facebench.data.landmark_layouts import AFLW19_FLIP, W300_FLIP
    from facebench.data.prepare import prepare_landmark_dataset

    cfg = _dataset(params, name)
    if cfg.format in IDENTITY_FORMATS:
        return _prepare_identity_dataset(cfg, name, paths)
    result = read_dataset(params, name, paths)
    flip = W300_FLIP if cfg.format == "w300" else AFLW19_FLIP
    return prepare_landmark_dataset(
        name, result, paths.prepared(name), crop_size=cfg.crop_size, margin=cfg.margin,
        pdb_bins=cfg.pdb_bins, pdb_component=cfg.pdb_component, flip_permutation=list(flip),
        normaliser=cfg.normaliser, seed=cfg.seed)


def _prepare_identity_dataset(cfg, name: str, paths: Paths) -> dict[str, Any]:
    """CASIA-WebFace or LFW layout -> five-point aligned crops (data/prepare_identity.py)."""
    from facebench.data.formats.casia import LFW_OVERLAP_IDS
    from facebench.data.prepare_identity import prepare_casia, prepare_lfw

    root = dataset_root(paths, name, cfg)
    if cfg.format == "casia":
        exclude = LFW_OVERLAP_IDS if cfg.exclude is None else cfg.exclude
        return prepare_casia(root, paths.prepared(name), template=cfg.template, exclude=exclude)
    return prepare_lfw(root, paths.prepared(name), template=cfg.template)


def _dataset(params: Params, name: str):
    if name not in params.datasets:
        raise ConfigError(f"params.yaml: no dataset {name!r}; known: {sorted(params.datasets)}")
    return params.datasets[name]
