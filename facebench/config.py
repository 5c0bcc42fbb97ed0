"""Typed view of params.yaml: profiles, datasets, losses, experiments and sweeps.

params.yaml is the single source of truth that DVC also reads (for its parameter dependencies), so
this module only validates and resolves it; it never invents values. Errors name the file and the
offending key so a typo in params.yaml is found at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from facebench.loss_specs import TASK_LOSSES, WEIGHT_MAP_PARAMS, param_problem, task_of


class Strict(BaseModel):
    """Base model that refuses unknown keys (a misspelt key is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


class SynthSettings(Strict):
    w300_scale: float = Field(gt=0, description="fraction of the real 300-W per-folder counts")
    aflw_faces: int = Field(gt=0, description="number of AFLW-Full faces")
    image_size: int = Field(default=256, ge=64)
    casia_identities: int = Field(default=100, gt=0, description="synthetic CASIA-WebFace identities")
    casia_images: tuple[int, int] = Field(default=(10, 20), description="images per identity (min, max)")
    lfw_folds: int = Field(default=10, gt=1)
    lfw_pairs_per_fold: int = Field(default=300, gt=0, description="matched (and as many mismatched) pairs per fold")
    lfw_people_per_fold: int = Field(default=20, gt=1)
    wider_images: dict[str, int] = Field(default_factory=lambda: {"train": 200, "val": 60},
                                         description="synthetic WIDER FACE scenes (640x480) per split")


class TrainSettings(Strict):
    epochs: int = Field(gt=0)
    pdb_epochs: int | None = Field(default=None, gt=0, description="epochs of experiments trained on the "
                                   "PDB-resampled split, which is larger (None: the same as epochs)")
    batch_size: int = Field(gt=0, description="per worker")
    lr: float = Field(gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    momentum: float = Field(default=0.9, ge=0)
    lr_schedule: Literal["constant", "cosine", "step"] = "cosine"
    lr_steps: list[int] = Field(default_factory=list, description="epochs at which 'step' divides lr by 10")
    num_workers: int = Field(default=1, gt=0, description="Ray Train workers (DDP ranks)")
    local_mode: bool = Field(default=True, description="one CPU worker trains in the stage's own process (Ray "
                             "Train's local mode: no worker group to start); false starts a Ray worker for it")
    cpus_per_worker: int | None = Field(default=None, description="None: share the machine's cores")
    use_gpu: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="how Ray places the workers (SPREAD: on different nodes where they fit, "
        "so that losing a node loses fewer of them)")
    max_failures: int | None = Field(default=None, ge=0, description="restarts of the worker group from the "
                                     "newest checkpoint after a worker or node is lost (Ray Train's "
                                     "FailureConfig); null: 3 on a cluster (RAY_ADDRESS set), 0 on this machine")
    amp: bool = Field(default=False, description="bf16 autocast on the GPU")
    augment: bool = True
    cache_dataset: bool = Field(default=True, description="read the training split once: straight from Parquet "
                                "into the device cache when a worker's shard fits device_cache_gib, else into "
                                "Ray's object store for Ray Data to stream; off for sets larger than the object store")
    shuffle_buffer_batches: int = Field(default=16, ge=0, description="rows shuffled locally before batching, "
                                        "in batches (0: block order only)")
    device_cache_gib: float = Field(default=4.0, ge=0, description="after the first epoch, train from the shard's "
                                    "batches kept on the device when they fit in this many GiB (0: stream every epoch)")
    prefetch_batches: int = Field(default=2, ge=0, description="batches Ray Data prepares ahead of the step")
    val_every: int = Field(default=1, gt=0, description="validate on the validation split every this many "
                           "epochs (and after the last)")
    keep_checkpoints: int = Field(default=2, gt=0, description="a run keeps its newest this many checkpoints "
                                  "(runs/<experiment>/<run id>/checkpoints); a finished run keeps its last only")
    deterministic: bool = Field(default=True, description="torch's deterministic algorithms (on GPUs some ops, "
                                "e.g. scatter-add backward, are otherwise non-deterministic; costs some speed)")
    export_model: bool = Field(default=True, description="log the trained model to MLflow as an exported graph "
                               "(MLflow's PyTorch flavour, ~3 s a run on 2 cores); models/<experiment>/model.pt "
                               "and the checkpoints hold the weights either way")
    seed: int = 0


class TuneSettings(Strict):
    """A sweep's trials: each trains in one process (Ray Train's local mode inside its Tune trial), so
    that it reports every epoch to Tune itself and stops at the epoch where ASHA stops it."""

    epochs: int = Field(gt=0)
    max_concurrent_trials: int = Field(default=1, gt=0, description="trials at once; ASHA's decisions depend "
                                       "on the order results arrive, so only 1 makes a sweep deterministic")
    cpus_per_trial: int = Field(default=1, gt=0)
    grace_period: int = Field(default=1, gt=0)
    reduction_factor: int = Field(default=2, gt=1)


class HeatmapSettings(Strict):
    """Network and target sizes of the heatmap task (Adaptive Wing: 256 in, 64x64 heatmaps, 4 stacks of
    256 features, hourglass depth 4, Gaussian sigma 1 heatmap pixel). Profiles shrink them for CPUs."""

    input_size: int = Field(default=256, gt=0, description="network input side; heatmaps are input_size / 4")
    stacks: int = Field(default=4, gt=0)
    features: int = Field(default=256, gt=0)
    depth: int = Field(default=4, gt=0, description="hourglass levels (4: 64 -> 4 px at the bottom)")
    sigma: float = Field(default=1.0, gt=0, description="Gaussian of the target heatmaps, in heatmap pixels")
    boundary_weight: float = Field(default=1.0, ge=0, description="the boundary map's loss against the landmark "
                                   "maps' (ours: 1 weighs the one boundary map like all landmark maps together)")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the profile's train settings "
                                  "for heatmap experiments (the AWing paper trains differently from the Wing paper)")


class RecognitionSettings(Strict):
    """Backbone size of the recognition task (SphereFace/CosFace residual network, 20 layers by default;
    CosFace's own results use 64). Profiles shrink it for CPUs."""

    depth: int = Field(default=20, description="conv layers of the SphereFace network: 4, 10, 20, 36 or 64")
    shard_head: bool = Field(default=True, description="on several Ray Train workers, split the classifier's "
                             "classes over them (each holds 1/R of the weight; the softmax runs on collectives), "
                             "so that the head need not fit one GPU; one worker holds it whole")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the profile's train settings "
                                  "for recognition experiments (the CosFace schedule, not the Wing one)")


class MtcnnSettings(Strict):
    """How many training crops MTCNN's stages get per scene (papers/mtcnn/samples.py), and their schedule."""

    negatives_per_scene: int = Field(default=50, gt=0, description="random squares per scene (mostly negatives)")
    crops_per_face: int = Field(default=20, gt=0, description="jittered squares around each face (positives, "
                                "parts; O-Net also as many tight ones for landmark faces)")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the profile's train settings "
                                  "for the three MTCNN stages")
    onet_train: dict[str, Any] = Field(default_factory=dict, description="further overrides for O-Net only")


class TwoStageSettings(Strict):
    """CNN-7's size in a profile: the paper's network is too slow for a 2-core CPU, so profiles may
    narrow it (the two-stage geometry and the 128-px input stay)."""

    width: float = Field(default=1.0, gt=0, description="CNN-7 channel multiplier (1: the paper's 64..512)")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the profile's train settings "
                                  "for two-stage (CNN-7) experiments")


class Profile(Strict):
    synth: SynthSettings
    train: TrainSettings
    tune: TuneSettings
    seeds: int | None = Field(gt=0, description="how many of a row's `seeds` this profile trains, first ones "
                              "first (null: all of them); required, so that DVC can track it")
    heatmaps: HeatmapSettings | None = Field(default=None, description="needed when heatmap experiments exist")
    recognition: RecognitionSettings | None = Field(default=None,
                                                    description="needed when recognition experiments exist")
    two_stage: TwoStageSettings = Field(default_factory=TwoStageSettings)
    mtcnn: MtcnnSettings | None = Field(default=None, description="needed when mtcnn_experiments exist")


LANDMARK_FORMATS = ("w300", "aflw_full")
IDENTITY_FORMATS = ("casia", "lfw", "casia_rec", "lfw_bin")
ALIGNED_FORMATS = ("casia_rec", "lfw_bin")  # InsightFace's packings: faces already aligned to 112x112, real only
SCENE_FORMATS = ("wider",)


class DatasetConfig(Strict):
    source: Literal["synth", "real"]
    format: Literal["w300", "aflw_full", "casia", "lfw", "wider", "casia_rec", "lfw_bin"] = Field(
        description="casia_rec: InsightFace's aligned CASIA-WebFace (train.rec, train.idx, property in root); "
                    "lfw_bin: InsightFace's lfw.bin (in root)")
    root: str = Field(description="dataset root in the official layout")
    # landmark sets (w300, aflw_full)
    crop_size: int | None = Field(default=None, gt=0)
    margin: float | None = Field(default=None, ge=0, description="context on each side, as a fraction of the box side")
    normaliser: Literal["inter_ocular", "box_width", "box_sqrt_area"] | None = None
    pdb_bins: int | None = Field(default=9, gt=1)
    pdb_component: int | None = None
    # identity sets (casia, lfw): the five-point alignment template, height x width
    template: Literal["112x96", "112x112"] = "112x96"
    points: Literal["list", "mtcnn"] = Field(default="list", description="identity sets: align by the dataset's "
                                             "landmark list, or by MTCNN's detected points (misses are listed)")
    exclude: list[str] | None = Field(default=None, description="CASIA identity folders to leave out "
                                      "(None: the three that overlap LFW, as SphereFace and CosFace do)")
    val_fraction: float = Field(default=0.1, gt=0, lt=1, description="validation held out of the training data, "
                                "drawn with `seed` (ours: the papers hold none out): that fraction of the training "
                                "images (landmark sets), identities (CASIA; their pairs built like LFW's) or "
                                "WIDER_train scenes (wider); LFW is a test set and holds none out")
    seed: int = 0
    synth: dict[str, Any] = Field(default_factory=dict, description="synthetic sets: overrides of the profile's "
                                  "synth settings for this set alone (the claims study's smaller or larger sets)")

    def applicable(self) -> dict[str, Any]:
        """The settings that apply to this set's format (what a run logs as its ``data.*`` params): a landmark
        set has no alignment template, an identity set no crop or PDB bins, WIDER neither."""
        landmark = ("crop_size", "margin", "normaliser", "pdb_bins", "pdb_component")
        identity = ("template", "points", "exclude")
        skip = (identity if self.format in LANDMARK_FORMATS else landmark if self.format in IDENTITY_FORMATS
                else landmark + identity)
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}

    @model_validator(mode="after")
    def _fields_of_the_format(self) -> "DatasetConfig":
        if self.format in LANDMARK_FORMATS:
            missing = [k for k in ("crop_size", "margin", "normaliser") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a {self.format} dataset needs {missing}")
        if self.format in ALIGNED_FORMATS:
            if self.source != "real":
                raise ValueError(f"a {self.format} dataset is real data (source: real); synth writes casia and lfw")
            if self.template != "112x112" or self.points != "list":
                raise ValueError(f"a {self.format} dataset holds faces aligned to 112x112: template must be "
                                 "'112x112' and points 'list' (nothing to detect)")
        if self.synth:
            try:
                SynthSettings.model_validate({"w300_scale": 1.0, "aflw_faces": 1, **self.synth})
            except ValidationError as exc:
                raise ValueError("synth: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                       for e in exc.errors())) from None
        return self


# Where each experiment ``task`` lives: the class train/task.py:build_task builds (one per paper, in the
# paper's own folder). The shared core names a paper's code only here, as text, and imports none of it.
TASK_CLASSES = {
    "landmarks": "facebench.papers.wing.task.LandmarkTask",
    "heatmaps": "facebench.papers.awing.task.HeatmapTask",
    "recognition": "facebench.papers.cosface.task.RecognitionTask",
    "detection": "facebench.papers.mtcnn.task.DetectionTask",
}


class Row(Strict):
    """What every experiment row has, whichever paper it belongs to."""

    dataset: str
    loss: str
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the profile's train settings")
    seeds: list[int] | None = Field(default=None, min_length=1, description="train once per seed (the first "
                                    "seed's model is the stage's output; the leaderboard shows mean and spread); "
                                    "the profile's `seeds` says how many of them it trains")
    profiles: list[str] | None = Field(default=None, min_length=1, description="the profiles that train this row "
                                       "(null: every profile); under any other, its stages write placeholder "
                                       "outputs that say so, and nothing is trained")


class ExperimentConfig(Row):
    """A coordinate-regression experiment (Wing loss paper)."""

    paper: Literal["wing"]
    task: Literal["landmarks"]
    model: Literal["cnn6", "resnet50"]
    pdb: bool = False


class TwoStageExperimentConfig(Row):
    """The second stage of the Wing paper's two-stage framework: CNN-7 on faces re-cropped from a CNN-6
    experiment's predictions (in-plane rotation removed, box corrected; facebench/papers/wing/two_stage.py)."""

    paper: Literal["wing"]
    task: Literal["landmarks"]
    model: Literal["cnn7"]
    stage1: str = Field(description="the CNN-6 experiment (in `experiments`, same dataset) whose predictions "
                        "re-crop this experiment's faces")
    pdb: bool = False


class RecognitionExperimentConfig(Row):
    """A face-recognition experiment (CosFace paper): train on an identity set, verify on an LFW-layout set."""

    paper: Literal["cosface"]
    task: Literal["recognition"]
    eval_dataset: str = Field(description="the verification set (LFW layout)")
    model: Literal["sphereface"]
    loss: str = Field(description="the head: softmax, nsl, sphereface, cosface or arcface")
    pdb: Literal[False] = False


class MtcnnExperimentConfig(Row):
    """One stage of MTCNN's cascade (Zhang et al. 2016), trained on crops of WIDER-format scenes;
    ``cascade`` names the trained earlier stages, whose proposals give this stage its hard examples."""

    paper: Literal["mtcnn"]
    task: Literal["detection"]
    model: Literal["pnet", "rnet", "onet"]
    loss: str = Field(description="the multi-task loss (losses.mtcnn: online hard sample mining ratio)")
    cascade: list[str] = Field(default_factory=list, description="the earlier stages' experiments, in order "
                               "(rnet: [pnet row]; onet: [pnet row, rnet row])")
    pdb: Literal[False] = False


class HeatmapExperimentConfig(Row):
    """A heatmap-regression experiment (Adaptive Wing paper); the flags are the paper's ablation axes."""

    paper: Literal["awing"]
    task: Literal["heatmaps"]
    model: Literal["hourglass"]
    pdb: bool = False
    weight_map: bool = Field(default=True, description="weighted loss map (W=10 on the dilated foreground)")
    boundary: bool = Field(default=True, description="boundary heatmap head (and boundary-aware CoordConv)")
    coordconv: bool = Field(default=True, description="CoordConv coordinate channels")


class SweepConfig(Strict):
    experiment: str
    metric: str = "val_nme"
    mode: Literal["min", "max"] = "min"
    grid: dict[str, list[float]] = Field(description="loss parameter -> values (grid search)")


class Params(Strict):
    profile: str
    seed: int = 0
    storage: str | None = Field(default=None, description="shared storage root of data/, runs/, models/, "
                                "metrics/ and plots/ (config.storage_root; FACEBENCH_STORAGE overrides it)")
    mlflow_ui: str | None = Field(default="http://127.0.0.1:5000", description="the MLflow UI the report's run "
                                  "ids link to (`facebench server`'s default address); null: no links")
    profiles: dict[str, Profile]
    datasets: dict[str, DatasetConfig]
    losses: dict[str, dict[str, float]]
    experiments: dict[str, ExperimentConfig]
    heatmap_experiments: dict[str, HeatmapExperimentConfig] = Field(default_factory=dict)
    recognition_experiments: dict[str, RecognitionExperimentConfig] = Field(default_factory=dict)
    two_stage_experiments: dict[str, TwoStageExperimentConfig] = Field(default_factory=dict)
    mtcnn_experiments: dict[str, MtcnnExperimentConfig] = Field(default_factory=dict)
    sweeps: dict[str, SweepConfig] = Field(default_factory=dict)
    heatmap_sweeps: dict[str, SweepConfig] = Field(default_factory=dict)
    recognition_sweeps: dict[str, SweepConfig] = Field(default_factory=dict)
    study: dict[str, Any] | None = Field(default=None, description="the claims study's settings (facebench/"
                                         "study.py reads and checks them: they change no training's code)")

    @model_validator(mode="after")
    def _cross_references(self) -> "Params":
        if self.profile not in self.profiles:
            raise ValueError(f"profile {self.profile!r} is not one of {sorted(self.profiles)}")
        tables = {"experiments": self.experiments, "heatmap_experiments": self.heatmap_experiments,
                  "recognition_experiments": self.recognition_experiments,
                  "two_stage_experiments": self.two_stage_experiments, "mtcnn_experiments": self.mtcnn_experiments}
        _no_shared_keys(tables)
        for name, profile in self.profiles.items():
            for section, settings, table in (("heatmaps", profile.heatmaps, "heatmap_experiments"),
                                             ("recognition", profile.recognition, "recognition_experiments"),
                                             ("two_stage", profile.two_stage, "two_stage_experiments"),
                                             ("mtcnn", profile.mtcnn, "mtcnn_experiments")):
                if tables[table] and settings is None:
                    raise ValueError(f"profiles.{name}.{section} is missing ({table} need it)")
        for section, experiments in tables.items():
            for key, exp in experiments.items():
                if exp.dataset not in self.datasets:
                    raise ValueError(f"{section}.{key}.dataset {exp.dataset!r} is not one of {sorted(self.datasets)}")
                eval_dataset = getattr(exp, "eval_dataset", None)
                if eval_dataset is not None and eval_dataset not in self.datasets:
                    raise ValueError(f"{section}.{key}.eval_dataset {eval_dataset!r} is not one of "
                                     f"{sorted(self.datasets)}")
                if exp.loss not in self.losses:
                    raise ValueError(f"{section}.{key}.loss {exp.loss!r} is not one of {sorted(self.losses)}")
        for section, experiments in tables.items():
            for key, exp in experiments.items():
                unknown = sorted(set(exp.profiles or ()) - set(self.profiles))
                if unknown:
                    raise ValueError(f"{section}.{key}.profiles: {unknown} not among {sorted(self.profiles)}")
        # after the rows' own fields, so a wrong dataset is named where it is wrong
        for key, exp in self.two_stage_experiments.items():
            first = self.experiments.get(exp.stage1)
            if first is None or first.model != "cnn6" or first.dataset != exp.dataset:
                raise ValueError(f"two_stage_experiments.{key}.stage1 {exp.stage1!r} must be a CNN-6 row of "
                                 f"`experiments` on dataset {exp.dataset!r}")
            if not self.profiles_of(key) <= self.profiles_of(exp.stage1):
                raise ValueError(f"two_stage_experiments.{key} trains in {sorted(self.profiles_of(key))}, but its "
                                 f"stage1 {exp.stage1!r} only in {sorted(self.profiles_of(exp.stage1))}")
        want = {"pnet": [], "rnet": ["pnet"], "onet": ["pnet", "rnet"]}
        for key, exp in self.mtcnn_experiments.items():
            got = [self.mtcnn_experiments[k].model if k in self.mtcnn_experiments else None for k in exp.cascade]
            if got != want[exp.model] or any(self.mtcnn_experiments[k].dataset != exp.dataset for k in exp.cascade):
                raise ValueError(f"mtcnn_experiments.{key}.cascade {exp.cascade} must name the {want[exp.model]} "
                                 f"rows of mtcnn_experiments on dataset {exp.dataset!r}, in that order")
            for earlier in exp.cascade:
                if not self.profiles_of(key) <= self.profiles_of(earlier):
                    raise ValueError(f"mtcnn_experiments.{key} trains in {sorted(self.profiles_of(key))}, but "
                                     f"{earlier!r} of its cascade only in {sorted(self.profiles_of(earlier))}")
        sweep_tables = {"sweeps": self.sweeps, "heatmap_sweeps": self.heatmap_sweeps,
                        "recognition_sweeps": self.recognition_sweeps}
        for (section, sweeps), experiments in zip(sweep_tables.items(), list(tables.values())[:3]):
            for key, sweep in sweeps.items():
                if sweep.experiment not in experiments:
                    raise ValueError(f"{section}.{key}.experiment {sweep.experiment!r} is not one of {sorted(experiments)}")
        _no_shared_keys(sweep_tables)
        return self

    @model_validator(mode="after")
    def _values_a_worker_would_refuse(self) -> "Params":
        """Loss parameters, sweep grids and train overrides, checked by the rules the training workers
        apply (loss_specs.py, TrainSettings), so that a bad value stops the command before Ray starts
        or an MLflow run is opened. Every problem is listed, each under its full key."""
        problems = (_loss_problems(self.losses) + _row_loss_problems(self) + _grid_problems(self)
                    + _train_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def all_experiments(self) -> dict[str, "ExperimentConfig | HeatmapExperimentConfig | RecognitionExperimentConfig | TwoStageExperimentConfig | MtcnnExperimentConfig"]:
        """The experiment tables together (DVC keeps them apart so each stage tracks only its own parameters)."""
        return {**self.experiments, **self.heatmap_experiments, **self.recognition_experiments,
                **self.two_stage_experiments, **self.mtcnn_experiments}

    def profiles_of(self, key: str) -> set[str]:
        """The profiles that train the experiment ``key``."""
        listed = self.all_experiments[key].profiles
        return set(self.profiles) if listed is None else set(listed)

    def trains(self, key: str) -> bool:
        """Whether the active profile trains the experiment ``key`` (its row's ``profiles``)."""
        return self.profile in self.profiles_of(key)

    def seeds_of(self, key: str) -> list[int] | None:
        """The seeds the active profile trains of the row ``key`` (None: the row lists none)."""
        seeds = self.all_experiments[key].seeds
        return None if seeds is None else seeds[:self.active.seeds]

    @property
    def all_sweeps(self) -> dict[str, SweepConfig]:
        return {**self.sweeps, **self.heatmap_sweeps, **self.recognition_sweeps}

    @property
    def active(self) -> Profile:
        return self.profiles[self.profile]


def _experiment_tables(params: Params) -> dict[str, dict]:
    return {"experiments": params.experiments, "heatmap_experiments": params.heatmap_experiments,
            "recognition_experiments": params.recognition_experiments,
            "two_stage_experiments": params.two_stage_experiments, "mtcnn_experiments": params.mtcnn_experiments}


def _loss_problems(losses: dict[str, dict[str, float]]) -> list[str]:
    """Each ``losses`` entry names a loss facebench has, with only that loss's parameters, in range."""
    known = sorted(key for table in TASK_LOSSES.values() for key in table)
    problems = []
    for key, values in losses.items():
        task = task_of(key)
        if task is None:
            problems.append(f"losses.{key}: no loss of that name; expected one of {', '.join(known)}")
            continue
        for name, value in values.items():
            problem = param_problem(TASK_LOSSES[task][key], name, value)
            if problem is not None:
                problems.append(f"losses.{key}.{name}: {problem}")
    return problems


def _row_loss_problems(params: Params) -> list[str]:
    """A row's loss is one its task trains with (a coordinate loss for a landmark row, a head for a
    recognition row, ...), and a heatmap row without the weighted loss map sets no weight-map value."""
    problems = []
    for section, table in _experiment_tables(params).items():
        for key, exp in table.items():
            allowed = TASK_LOSSES[exp.task]
            other = task_of(exp.loss)
            if exp.loss not in allowed and other is not None:  # an unknown name is reported under losses
                problems.append(f"{section}.{key}.loss: {exp.loss!r} is a loss of the {other} task; a {exp.task} "
                                f"row takes one of {', '.join(allowed)}")
            elif exp.loss in allowed and exp.task == "heatmaps" and not exp.weight_map:
                used = sorted(set(params.losses.get(exp.loss, {})) & set(WEIGHT_MAP_PARAMS))
                if used:
                    problems.append(f"{section}.{key}: losses.{exp.loss} sets {', '.join(used)} (settings of the "
                                    "weighted loss map), but this row has weight_map: false")
    return problems


def _grid_problems(params: Params) -> list[str]:
    """Every sweep grid key is a parameter of its base experiment's loss, and every value is in range."""
    rows = params.all_experiments
    problems = []
    for section, sweeps in (("sweeps", params.sweeps), ("heatmap_sweeps", params.heatmap_sweeps),
                            ("recognition_sweeps", params.recognition_sweeps)):
        for key, sweep in sweeps.items():
            exp = rows[sweep.experiment]
            spec = TASK_LOSSES[exp.task].get(exp.loss)
            if spec is None:
                continue  # the row's loss is wrong, and reported there
            for name, values in sweep.grid.items():
                where = f"{section}.{key}.grid.{name}"
                if name not in spec:
                    problems.append(f"{where}: {exp.loss!r}, the loss of {sweep.experiment}, has no parameter "
                                    f"{name!r}; it takes {', '.join(sorted(spec)) or 'none'}")
                elif not values:
                    problems.append(f"{where}: no values; expected a list of at least one")
                elif name in WEIGHT_MAP_PARAMS and not exp.weight_map:
                    problems.append(f"{where}: configures the weighted loss map, but {sweep.experiment} has "
                                    "weight_map: false")
                else:
                    problems += [f"{where}: {p}" for p in (param_problem(spec, name, v) for v in values) if p]
    return problems


def _train_problems(params: Params) -> list[str]:
    """Every ``train:`` override (a profile's task section, O-Net's, a row's) is a valid TrainSettings
    value: known key, right type, in range. TrainSettings has no checks across fields, so each override
    is checked on top of the profile's own (valid) train settings."""
    problems = []
    for name, profile in params.profiles.items():
        sections = {"heatmaps": profile.heatmaps, "recognition": profile.recognition, "two_stage": profile.two_stage,
                    "mtcnn": profile.mtcnn}
        for section, settings in sections.items():
            if settings is not None:
                problems += _override_problems(f"profiles.{name}.{section}.train", profile.train, settings.train)
        if profile.mtcnn is not None:
            problems += _override_problems(f"profiles.{name}.mtcnn.onet_train", profile.train,
                                           profile.mtcnn.onet_train)
    for section, table in _experiment_tables(params).items():
        for key, exp in table.items():
            problems += _override_problems(f"{section}.{key}.train", params.active.train, exp.train)
    return problems


def _override_problems(where: str, base: TrainSettings, overrides: dict[str, Any]) -> list[str]:
    try:
        TrainSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        return [_train_error(where, err) for err in exc.errors()]
    return []


def _train_error(where: str, err: Any) -> str:
    """One pydantic error of a TrainSettings check, as '<where>.<key>: <what>, got <value>'."""
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{where}.{key}: not a train setting; expected one of {', '.join(TrainSettings.model_fields)}"
    return f"{where}.{key}: {err['msg']}, got {err['input']!r}"


def _no_shared_keys(tables: dict[str, dict]) -> None:
    """A key names one experiment (or sweep): DVC stages and MLflow runs are named by it."""
    seen: dict[str, str] = {}
    for section, table in tables.items():
        for key in table:
            if key in seen:
                raise ValueError(f"key {key!r} is in both {seen[key]} and {section}")
            seen[key] = section


class ConfigError(ValueError):
    """params.yaml is missing, unparsable or inconsistent; the message names the file and key."""


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Read and validate params.yaml; ``profile`` overrides the file's ``profile`` key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (expected the project's params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if profile is not None:
        raw["profile"] = profile
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # A check of the whole file (a ValueError raised by a validator) already starts with its key.
            message = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
            if err["loc"]:
                message = f"{'.'.join(str(p) for p in err['loc'])}: {message}"
            problems += message.splitlines()
        if len(problems) == 1:
            raise ConfigError(f"{path}: {problems[0]}") from None
        raise ConfigError("\n".join([f"{path}: {len(problems)} invalid parameters:"] + [f"  {p}" for p in problems])
                          ) from None


class ResolvedHeatmap(Strict):
    """The profile's heatmap sizes with the experiment's ablation flags."""

    input_size: int
    stacks: int
    features: int
    depth: int
    sigma: float
    boundary_weight: float = 1.0
    weight_map: bool
    boundary: bool
    coordconv: bool


class ResolvedExperiment(Strict):
    """One experiment with everything it needs resolved: what a training job is given."""

    key: str
    profile: str
    paper: str
    task: str
    dataset: str
    dataset_config: DatasetConfig
    model: str
    loss: str
    loss_params: dict[str, float]
    pdb: bool
    train: TrainSettings
    heatmap: ResolvedHeatmap | None = None
    eval_dataset: str | None = None
    backbone_depth: int | None = None  # recognition: layers of the SphereFace network
    shard_head: bool | None = None  # recognition: classifier split over the workers
    stage1: str | None = None  # two-stage: the CNN-6 experiment whose predictions re-crop the faces
    cnn7_width: float | None = None  # two-stage: CNN-7 channel multiplier
    cascade: list[str] | None = None  # MTCNN: the earlier stages' experiments


    def config_hash(self) -> str:
        """Hash of everything that changes the result; names the Ray run so a changed config starts afresh."""
        blob = json.dumps(self.model_dump(exclude_none=True), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def resolve_experiment(params: Params, key: str, **train_overrides: Any) -> ResolvedExperiment:
    known = params.all_experiments
    if key not in known:
        raise ConfigError(f"params.yaml: no experiment {key!r}; known: {sorted(known)}")
    exp = known[key]
    heatmap, depth, shard_head, cnn7_width, task_train = None, None, None, None, {}
    if isinstance(exp, HeatmapExperimentConfig):
        settings = params.active.heatmaps.model_dump()
        task_train = settings.pop("train")
        heatmap = ResolvedHeatmap(**settings, weight_map=exp.weight_map, boundary=exp.boundary,
                                  coordconv=exp.coordconv)
    if isinstance(exp, RecognitionExperimentConfig):
        settings = params.active.recognition
        depth, shard_head, task_train = settings.depth, settings.shard_head, settings.train
    if isinstance(exp, TwoStageExperimentConfig):
        cnn7_width, task_train = params.active.two_stage.width, params.active.two_stage.train
    if isinstance(exp, MtcnnExperimentConfig):
        mtcnn = params.active.mtcnn
        task_train = {**mtcnn.train, **(mtcnn.onet_train if exp.model == "onet" else {})}
    profile_train = params.active.train
    if exp.pdb and profile_train.pdb_epochs is not None:
        profile_train = profile_train.model_copy(update={"epochs": profile_train.pdb_epochs})
    train = profile_train.model_copy(update={**task_train, **exp.train, **train_overrides})
    try:
        train = TrainSettings.model_validate(train.model_dump())
    except ValidationError as exc:  # params.yaml's overrides were checked at load: these came from the caller
        problems = "; ".join(_train_error("train", err) for err in exc.errors())
        raise ConfigError(f"experiment {key!r} with overrides {train_overrides}: {problems}") from None
    return ResolvedExperiment(
        key=key,
        profile=params.profile,
        paper=exp.paper,
        task=exp.task,
        dataset=exp.dataset,
        dataset_config=params.datasets[exp.dataset],
        model=exp.model,
        loss=exp.loss,
        loss_params=dict(params.losses[exp.loss]),
        pdb=exp.pdb,
        train=train,
        heatmap=heatmap,
        eval_dataset=getattr(exp, "eval_dataset", None),
        backbone_depth=depth,
        shard_head=shard_head,
        stage1=getattr(exp, "stage1", None),
        cnn7_width=cnn7_width,
        cascade=list(exp.cascade) if isinstance(exp, MtcnnExperimentConfig) else None,
    )


def resolve_sweep(params: Params, key: str) -> SweepConfig:
    """The sweep named ``key``, or a ConfigError listing the known ones."""
    sweeps = params.all_sweeps
    if key not in sweeps:
        raise ConfigError(f"params.yaml: no sweep {key!r}; known: {sorted(sweeps)}")
    return sweeps[key]


MODEL_FILE = "model.pt"  # a training stage's state dict, in models/<experiment>/


STORAGE_ENV = "FACEBENCH_STORAGE"


class Paths(Strict):
    """Where each stage reads and writes. ``root`` is the project (the folder of params.yaml: reports, the
    local MLflow store); ``store`` is the storage root of data/, runs/, models/, metrics/ and plots/,
    the project itself unless a shared root is set (``storage_root``): on a cluster every node reads and
    writes the same prepared data and checkpoints there."""

    root: Path
    store: Path | None = None

    @property
    def base(self) -> Path:
        return self.store if self.store is not None else self.root

    def raw(self, dataset: str) -> Path:
        return self.base / "data" / "raw" / dataset

    @property
    def prepared_root(self) -> Path:
        """data/prepared: every dataset's prepared splits (the report's baselines read them)."""
        return self.base / "data" / "prepared"

    def prepared(self, dataset: str) -> Path:
        return self.prepared_root / dataset

    def training_data(self, exp: ResolvedExperiment) -> Path:
        """The prepared set an experiment trains and tests on: its dataset's, or for a two-stage row the
        faces re-cropped by its stage 1 (kept outside data/prepared, which the sweeps depend on whole)."""
        if exp.cascade is not None:
            return self.mtcnn_data(exp.key)
        return self.base / "data" / "stage2" / exp.key if exp.stage1 else self.prepared(exp.dataset)

    def mtcnn_data(self, experiment: str) -> Path:
        """An MTCNN stage's training crops (papers/mtcnn/samples.py)."""
        return self.base / "data" / "mtcnn" / experiment

    def run_dir(self, experiment: str, run_id: str) -> Path:
        """One training run's checkpoints and Ray files: runs/<experiment>/<MLflow run id>."""
        return self.storage / experiment / run_id

    def model_dir(self, experiment: str) -> Path:
        return self.base / "models" / experiment

    def model_weights(self, experiment: str) -> Path:
        """The trained state dict a training stage writes into its model folder and later stages read."""
        return self.model_dir(experiment) / MODEL_FILE

    def metrics_file(self, experiment: str) -> Path:
        return self.base / "metrics" / f"{experiment}.json"

    def plots_dir(self, experiment: str) -> Path:
        return self.base / "plots" / experiment

    def sweep_file(self, sweep: str) -> Path:
        return self.base / "metrics" / "sweeps" / f"{sweep}.json"

    def sweep_dir(self, sweep: str, parent_run_id: str) -> Path:
        """Ray Tune's own files of one sweep while it runs (removed after: MLflow and the JSON keep them)."""
        return self.storage / "sweeps" / f"{sweep}-{parent_run_id}"

    @property
    def registry_file(self) -> Path:
        """models/registry.json: the champion of each (paper, dataset, model) (facebench/registry.py)."""
        return self.base / "models" / "registry.json"

    @property
    def storage(self) -> Path:
        return self.base / "runs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def storage_root(params: Params, project: Path) -> Path | None:
    """The shared storage root: ``FACEBENCH_STORAGE``, else params.yaml's ``storage``; None (the project
    itself) when neither is set. A relative path is taken from the project. It must be a path every node
    sees the same (NFS, or an object store mounted with s3fs/gcsfuse): facebench writes it with plain file
    operations."""
    given = os.environ.get(STORAGE_ENV) or params.storage
    if not given:
        return None
    if "://" in given:
        raise ConfigError(f"{STORAGE_ENV if os.environ.get(STORAGE_ENV) else 'params.yaml: storage'} = {given!r}: "
                          "expected a filesystem path every node mounts (an object store mounted with "
                          "s3fs/gcsfuse), not a URI")
    path = Path(given).expanduser()
    return (path if path.is_absolute() else project / path).resolve()


def dataset_root(paths: Paths, name: str, cfg: DatasetConfig) -> Path:
    """The dataset's root: relative roots are taken from the storage root (the project unless shared)."""
    root = Path(cfg.root)
    return root if root.is_absolute() else paths.base / root
