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
    from facebench.data.synth import landmarks

    cfg = _dataset(params, name)
    if cfg.source != "synth":
        raise ConfigError(f"params.yaml: datasets.{name}.source is {cfg.source!r}; synth writes only 'synth' sets")
    # the set's own overrides (checked when params.yaml is read) over the profile's sizes
    s = params.active.synth.model_copy(update=cfg.synth)
    root = dataset_root(paths, name, cfg)
    seed = params.seed * 1000 + cfg.seed
    print(f"[synth {name}] writing {cfg.format} layout under {root}", file=sys.stderr, flush=True)
    if cfg.format == "w300":
        return landmarks.synth_w300(root, landmarks.w300_counts(s.w300_scale), seed=seed, image_size=s.image_size)
    if cfg.format == "aflw_full":
        return landmarks.synth_aflw(root, s.aflw_faces, seed=seed, image_size=s.image_size)
    if cfg.format == "casia":
        from facebench.data.synth.identities import synth_casia

        return synth_casia(root, s.casia_identities, tuple(s.casia_images), seed=seed)
    if cfg.format == "lfw":
        from facebench.data.synth.identities import synth_lfw

        return synth_lfw(root, s.lfw_folds, s.lfw_pairs_per_fold, s.lfw_people_per_fold, seed=seed)
    if cfg.format == "wider":
        from facebench.data.synth.wider import synth_wider

        return synth_wider(root, dict(s.wider_images), seed=seed)
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
    if cfg.format == "wider":  # detection scenes: an index of images, faces and five points
        from facebench.data.formats.wider import prepare_scenes

        return prepare_scenes(dataset_root(paths, name, cfg), paths.prepared(name), val_fraction=cfg.val_fraction,
                              seed=cfg.seed)
    root = dataset_root(paths, name, cfg)
    result = read_dataset(params, name, paths)
    flip = W300_FLIP if cfg.format == "w300" else AFLW19_FLIP
    return prepare_landmark_dataset(
        name, result, paths.prepared(name), crop_size=cfg.crop_size, margin=cfg.margin,
        pdb_bins=cfg.pdb_bins, pdb_component=cfg.pdb_component, flip_permutation=list(flip),
        normaliser=cfg.normaliser, seed=cfg.seed, val_fraction=cfg.val_fraction,
        val_group="w300_picture" if cfg.format == "w300" else "image",
        expected_splits=expected_landmark_splits(cfg.format, root), source_root=root)


def expected_landmark_splits(fmt: str, root) -> dict[str, str]:
    """The splits a landmark set must have, each with where its faces come from, relative to the dataset
    ``root`` (the manifest's splits.<split>.from; the error an empty one raises adds the root): 300-W's
    train, common and challenging folders (and private when its folders exist), AFLW-Full's train and test
    lists."""
    from pathlib import Path

    root = Path(root)
    if fmt == "w300":
        from facebench.data.formats.w300 import SETS

        folders: dict[str, list[str]] = {}
        for folder, split, _ in SETS:
            if split != "private" or (root / folder).is_dir():
                folders.setdefault(split, []).append(f"{folder}/")
        return {split: " and ".join(found) for split, found in folders.items()}
    if fmt == "aflw_full":
        from facebench.data.formats.aflw import MAT_NAME

        return {"train": f"{MAT_NAME} (the training entries of ra)",
                "test": f"{MAT_NAME} (the test entries of ra, after the training count)"}
    raise ConfigError(f"no expected splits for format {fmt!r}")


def _prepare_identity_dataset(cfg, name: str, paths: Paths) -> dict[str, Any]:
    """CASIA-WebFace or LFW layout -> five-point aligned crops, or InsightFace's aligned packings (train.rec,
    lfw.bin) -> the same outputs (data/prepare_identity.py)."""
    from facebench.data.formats.casia import LFW_OVERLAP_IDS
    from facebench.data.prepare_identity import prepare_casia, prepare_casia_rec, prepare_lfw, prepare_lfw_bin

    root = dataset_root(paths, name, cfg)
    detector = None
    if cfg.points == "mtcnn":  # the published weights ($FACEBENCH_MTCNN_WEIGHTS to use trained ones)
        from facebench.papers.mtcnn.detect import MTCNNDetector

        detector = MTCNNDetector()
    if cfg.format == "casia_rec":
        return prepare_casia_rec(root, paths.prepared(name), val_fraction=cfg.val_fraction, seed=cfg.seed)
    if cfg.format == "lfw_bin":
        return prepare_lfw_bin(root / "lfw.bin", paths.prepared(name))
    if cfg.format == "casia":
        exclude = LFW_OVERLAP_IDS if cfg.exclude is None else cfg.exclude
        return prepare_casia(root, paths.prepared(name), template=cfg.template, exclude=exclude, detector=detector,
                             val_fraction=cfg.val_fraction, seed=cfg.seed)
    return prepare_lfw(root, paths.prepared(name), template=cfg.template, detector=detector)


def _dataset(params: Params, name: str):
    if name not in params.datasets:
        raise ConfigError(f"params.yaml: no dataset {name!r}; known: {sorted(params.datasets)}")
    return params.datasets[name]


def mtcnn_training_data(params: Params, experiment: str, paths: Paths, device: str = "cpu") -> dict[str, Any]:
    """One MTCNN stage's training crops (papers/mtcnn/samples.py) -> data/mtcnn/<experiment>/; R-Net's and O-Net's
    mine the proposals of the trained earlier stages (models/<stage>/model.pt)."""
    from facebench.config import resolve_experiment
    from facebench.data.formats.wider import load_scenes
    from facebench.data.parquet import read_metadata
    from facebench.papers.mtcnn.samples import write_training_data

    exp = resolve_experiment(params, experiment)
    if exp.cascade is None:
        raise ConfigError(f"params.yaml: {experiment!r} is not in mtcnn_experiments")
    cfg = _dataset(params, exp.dataset)
    settings = params.active.mtcnn
    proposer = None
    if exp.cascade:
        from facebench.papers.mtcnn.detect import MTCNNDetector
        from facebench.papers.mtcnn.model import load_trained
        from facebench.papers.mtcnn.samples import MINING_MAX_CANDIDATES, MINING_THRESHOLDS

        weights = [paths.model_weights(key) for key in exp.cascade]
        detector = MTCNNDetector(nets=load_trained(weights), device=device, min_face=12,
                                 thresholds=MINING_THRESHOLDS)
        detector.max_candidates = MINING_MAX_CANDIDATES
        proposer = detector.proposals
    raw_root = dataset_root(paths, exp.dataset, cfg)
    # Crops from WIDER_train's training scenes ("train") and its held-out ones ("val"), none from the test
    # scenes (WIDER_val) the cascade is scored on.
    prepared = paths.prepared(exp.dataset)
    if not (prepared / "train.parquet").is_file():
        raise FileNotFoundError(f"{prepared / 'train.parquet'}: prepared WIDER scenes not found (run "
                                f"`facebench prepare {exp.dataset}`)")
    return write_training_data(lambda split: load_scenes(prepared, split, raw_root),
                               paths.mtcnn_data(experiment), exp.model, seed=params.seed * 1000 + cfg.seed,
                               negatives=settings.negatives_per_scene, per_face=settings.crops_per_face,
                               proposer=proposer, splits=("train", "val"),
                               scenes_content_hash=read_metadata(prepared / "train.parquet")["content_hash"])
