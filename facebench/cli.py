"""The `facebench` command: one verb per pipeline stage, each a thin call into the library.

Bad input (params.yaml, a dataset, a name on the command line) is reported as one line,
``error: <message>`` on stderr, exit status 2; ``--debug`` (or FACEBENCH_DEBUG=1) shows the traceback
instead. Anything else is a bug and keeps its traceback. ``_App`` wraps every command once for this.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from facebench.config import ConfigError, Paths, load_params, resolve_experiment, resolve_sweep, storage_root

# What bad input raises: params.yaml (ConfigError), a missing file or folder, a value a reader or stage
# refuses (ValueError, e.g. DatasetFormatError), an unknown name looked up by a library function (KeyError).
EXPECTED_ERRORS = (ConfigError, FileNotFoundError, ValueError, KeyError)


# Set by the app's callback on every command line (--debug or FACEBENCH_DEBUG); None where a command
# function is called directly, which then reads FACEBENCH_DEBUG itself.
_debug_option: dict[str, bool | None] = {"debug": None}


def _debug() -> bool:
    if _debug_option["debug"] is not None:
        return _debug_option["debug"]
    return os.environ.get("FACEBENCH_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _message(exc: BaseException) -> str:
    # str(KeyError("x")) is "'x'": show a KeyError's own message unquoted
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def report_expected_errors(command: Callable) -> Callable:
    """Run ``command``; an expected error becomes ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EXPECTED_ERRORS as exc:
            if _debug():
                raise
            typer.echo(f"error: {_message(exc)}", err=True)
            raise typer.Exit(2) from None

    return run


class _App(typer.Typer):
    """A Typer app whose every command reports expected errors the same way (``report_expected_errors``)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda command: register(report_expected_errors(command))


app = _App(add_completion=False, no_args_is_help=True,
           help="Train and benchmark face-analysis papers on Ray, tracked in MLflow, driven by DVC.")


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", envvar="FACEBENCH_DEBUG",
                                        help="show the traceback of expected errors (bad params, data or "
                                             "names) instead of one `error:` line")) -> None:
    """Train and benchmark face-analysis papers on Ray, tracked in MLflow, driven by DVC."""
    _debug_option["debug"] = debug

ParamsOpt = typer.Option(Path("params.yaml"), "--params", help="params.yaml of the project")
ProfileOpt = typer.Option(None, "--profile", help="override params.yaml's profile (smoke/default/paper)")


def _setup(params_file: Path, profile: Optional[str]):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    params = load_params(params_file, profile)
    project = params_file.resolve().parent
    return params, Paths(root=project, store=storage_root(params, project))


def _print(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


@app.command()
def synth(dataset: str, params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """Write a procedural dataset in its official on-disk format (data/raw/<dataset>)."""
    params, paths = _setup(params_file, profile)
    from facebench.stages import synth_dataset

    _print(synth_dataset(params, dataset, paths))


@app.command()
def prepare(dataset: str, params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """Read a dataset in its official format and write Parquet splits (+ PDB, manifest)."""
    params, paths = _setup(params_file, profile)
    from facebench.stages import prepare_dataset

    manifest = prepare_dataset(params, dataset, paths)
    typer.echo(json.dumps({k: manifest.get(k) for k in ("dataset", "counts", "quarantined_count")}, indent=2,
                          default=str))


@app.command()
def train(experiment: str, params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
          num_workers: Optional[int] = typer.Option(None, help="override the Ray Train worker count"),
          use_gpu: Optional[bool] = typer.Option(None, "--gpu/--cpu", help="override the profile's device"),
          epochs: Optional[int] = typer.Option(None, help="override the profile's epochs"),
          seed: Optional[int] = typer.Option(None, help="train another seed: tracked in MLflow only (models/ and "
                                             "metrics/ keep the DVC run's outputs); the leaderboard averages the "
                                             "seeds of a configuration"),
          force: bool = typer.Option(False, "--force", help="train a new run even when a finished run of the "
                                     "same params, code and data exists (which is otherwise reused)"),
          recrop_first: bool = typer.Option(False, "--recrop", help="a two-stage row: re-crop its faces from the "
                                            "stage-1 model first, as `facebench recrop` does (one process, one "
                                            "DVC stage)")) -> None:
    """Train one experiment on Ray Train, tracked in MLflow (a finished run of the same params, code and data
    is reused; an unfinished one resumes from its newest checkpoint)."""
    params, paths = _setup(params_file, profile)
    overrides = {k: v for k, v in {"num_workers": num_workers, "use_gpu": use_gpu, "epochs": epochs,
                                   "seed": seed}.items() if v is not None}
    if recrop_first:
        recrop(experiment, params_file, profile, device="cpu")
    resolve_experiment(params, experiment)  # an unknown name fails here
    if not params.trains(experiment):
        from facebench.train.skip import write_not_trained

        _print(write_not_trained(experiment, paths, params.profile, params.profiles_of(experiment),
                                 [paths.model_dir(experiment), paths.metrics_file(experiment),
                                  paths.plots_dir(experiment)]))
        return
    # A row's `seeds` list trains once per seed (as many as the profile's `seeds`). The first seed's run
    # writes the DVC outputs and goes last, so it is also the newest run: the one the leaderboard's run
    # column and CED curves show.
    row_seeds = params.seeds_of(experiment) if seed is None else None
    order = (row_seeds[1:] + row_seeds[:1]) if row_seeds else [None]
    runs = [resolve_experiment(params, experiment, **overrides, **({} if s is None else {"seed": s}))
            for s in order]
    from facebench.train.experiment import train_experiment

    for i, exp in enumerate(runs):
        last = i == len(runs) - 1
        if len(runs) > 1:
            typer.echo(f"[{experiment}] seed {exp.train.seed} ({i + 1} of {len(runs)}"
                       f"{', writes the stage outputs' if last else ''})")
        _print(train_experiment(exp, paths, write_outputs=seed is None and last, force=force))


@app.command()
def recrop(experiment: str, params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
           device: str = typer.Option("cpu", help="where stage 1 runs: cpu or cuda")) -> None:
    """Re-crop a two-stage experiment's faces from its stage-1 (CNN-6) model's predictions, for CNN-7."""
    params, paths = _setup(params_file, profile)
    exp = resolve_experiment(params, experiment)
    if exp.stage1 is None:
        raise ConfigError(f"params.yaml: {experiment!r} is not in two_stage_experiments (no stage1)")
    if not params.trains(experiment):
        from facebench.train.skip import write_not_trained

        _print(write_not_trained(experiment, paths, params.profile, params.profiles_of(experiment),
                                 [paths.training_data(exp)]))
        return
    import torch

    from facebench.papers.wing.two_stage import recrop_experiment

    _print(recrop_experiment(exp, paths, torch.device(device)))


@app.command("mtcnn-data")
def mtcnn_data(experiment: str, params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
               device: str = typer.Option("cpu", help="where the earlier stages propose boxes: cpu or cuda")) -> None:
    """Make an MTCNN stage's training crops (IoU-labelled, mixed 3:1:1:2, hard examples mined by the trained
    earlier stages) from the prepared WIDER-format scenes."""
    params, paths = _setup(params_file, profile)
    from facebench.stages import mtcnn_training_data

    _print(mtcnn_training_data(params, experiment, paths, device))


@app.command("mtcnn-export")
def mtcnn_export(params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
                 out: Path = typer.Option(Path("models/mtcnn_cascade"), help="folder for pnet.pt, rnet.pt, onet.pt")
                 ) -> None:
    """Write the trained cascade (the O-Net row of mtcnn_experiments and its earlier stages) in the published
    weights' layout, for `facebench detect --weights`."""
    params, paths = _setup(params_file, profile)
    onets = [k for k, e in params.mtcnn_experiments.items() if e.model == "onet"]
    if len(onets) != 1:
        raise ConfigError(f"params.yaml: expected one O-Net row in mtcnn_experiments, found {onets}")
    import torch

    from facebench.papers.mtcnn.model import load_trained

    keys = params.mtcnn_experiments[onets[0]].cascade + onets
    nets = load_trained([paths.model_weights(key) for key in keys])
    out = out if out.is_absolute() else paths.base / out
    out.mkdir(parents=True, exist_ok=True)
    for name, net in zip(("pnet", "rnet", "onet"), nets):
        torch.save(net.state_dict(), out / f"{name}.pt")
    _print({"weights": str(out), "from": keys})


@app.command()
def tune(sweep: str, params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """Sweep a loss's hyperparameters on Ray Tune (ASHA); nested MLflow runs."""
    params, paths = _setup(params_file, profile)
    resolve_sweep(params, sweep)  # an unknown name fails here, before Ray and MLflow are imported
    from facebench.train.tune import run_sweep

    summary = run_sweep(params, sweep, paths)
    _print({k: v for k, v in summary.items() if k != "trials"})


@app.command()
def report(params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt,
           out: Optional[Path] = typer.Option(None, help="output folder (default: the project's reports/)")) -> None:
    """Regenerate the leaderboards from MLflow (reports/leaderboard.md and .html)."""
    params, paths = _setup(params_file, profile)
    from facebench.report import LANDMARK_TASKS, build_report
    from facebench.tracking import code_version, tracking_uri

    datasets = sorted({e.dataset for e in params.all_experiments.values() if e.task in LANDMARK_TASKS})
    sources = sorted({params.datasets[e.dataset].source for e in params.all_experiments.values()})
    data = {"synth": "synthetic (procedural faces)", "real": "real"}
    provenance = {"commit": code_version(paths.root),
                  "data": " and ".join(data[s] for s in sources) + (" (per dataset in params.yaml)" if len(sources) > 1 else "")}
    _print(build_report(tracking_uri(paths.root), paths.prepared_root, out or paths.reports, params.profile, datasets,
                        provenance, params.mlflow_ui))


@app.command()
def study(question: str = typer.Argument(..., help="wing, cosface or awing"), params_file: Path = ParamsOpt) -> None:
    """Run one question of the claims study (params.yaml `study:`): train or reuse every cell, each seed, in
    the MLflow experiment facebench-study/<question>; write study/<question>.json with the computed findings."""
    params, paths = _setup(params_file, None)
    from facebench.study import run_study, study_settings

    wanted = study_settings(params).profile  # a missing or wrong `study:` is an error here
    if wanted != params.profile:
        params, paths = _setup(params_file, wanted)
    _print(run_study(params, question, paths))


@app.command()
def claims(params_file: Path = ParamsOpt, out: Optional[Path] = typer.Option(
        None, help="output folder (default: the project's reports/)")) -> None:
    """Write the claims study's report (reports/claims.md and .html, figures in reports/claims/) from
    study/*.json: for each question, its figure and its computed findings."""
    params, paths = _setup(params_file, None)
    from facebench.report.claims import build_claims

    _print(build_claims(paths.root / "study", out or paths.reports, params.mlflow_ui))


@app.command()
def register(params_file: Path = ParamsOpt, profile: Optional[str] = ProfileOpt) -> None:
    """Register each (paper, dataset, model)'s best run on validation in the MLflow model registry with the
    aliases `champion` and the profile's name; writes models/registry.json (facebench/registry.py)."""
    params, paths = _setup(params_file, profile)
    from facebench.atomic import atomic_write_text
    from facebench.registry import register as register_best
    from facebench.tracking import tracking_uri

    summary = register_best(tracking_uri(paths.root), params.profile)
    atomic_write_text(paths.registry_file, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _print(summary)


@app.command(context_settings={"allow_interspersed_args": False})
def submit(command: Optional[list[str]] = typer.Argument(None, help="what to run on the cluster, after --, "
                                                         "e.g. -- facebench train aflw_cnn6_wing"),
           stage: Optional[str] = typer.Option(None, help="a dvc.yaml stage (e.g. train@aflw_cnn6_wing) to run on "
                                               "the cluster with FACEBENCH_STORAGE as its data root; its outputs "
                                               "come back here into dvc.lock"),
           address: Optional[str] = typer.Option(None, help="the cluster's Ray dashboard, e.g. http://127.0.0.1:8265 "
                                                 "(default: RAY_ADDRESS, then RAY_JOB_ADDRESS)"),
           wait: bool = typer.Option(True, help="stream the job's logs and exit with its outcome"),
           install_deps: bool = typer.Option(False, "--install-deps", help="have Ray install facebench's "
                                             "dependencies for the job (from PyPI) where the cluster lacks them")
           ) -> None:
    """Run a command, or a DVC stage, on a Ray cluster (Ray Jobs API) with this project's code: see
    facebench/submit.py."""
    from facebench.submit import main

    if not command and stage is None:
        raise ValueError("nothing to run: give the command after --, e.g. facebench submit -- facebench train x, "
                         "or --stage train@x")
    raise typer.Exit(main(list(command or []), address, wait, stage, install_deps))


@app.command()
def detect(images: list[Path] = typer.Argument(..., help="image files"),
           weights: Optional[Path] = typer.Option(None, help="MTCNN weights folder (default: published)"),
           device: str = typer.Option("cpu", help="cpu or cuda"),
           min_face: Optional[int] = typer.Option(None, "--min-face", help="smallest face in pixels"),
           preset: str = typer.Option("paper", help="paper (min face 20, 0.6/0.7/0.7) or wider"),
           as_json: bool = typer.Option(True, "--json/--text", help="JSON (default) or one line per face")
           ) -> None:
    """Detect faces and five landmarks with the MTCNN cascade."""
    from facebench.papers.mtcnn.cli import detect_command

    typer.echo(detect_command(images, weights, device, min_face, preset, as_json))


@app.command()
def bench(models: Optional[list[str]] = typer.Argument(None, help="cnn6, hourglass, mtcnn (default: all)"),
          device: Optional[list[str]] = typer.Option(None, help="cpu, cuda (repeatable; default: cpu, and cuda "
                                                     "when present)"),
          batch_size: list[int] = typer.Option([1, 32], "--batch-size", help="repeatable"),
          seconds: float = typer.Option(3.0, help="timed seconds per setting"),
          min_face: float = typer.Option(20, "--min-face", help="MTCNN smallest face (frames are 640x480)"),
          weights: Optional[Path] = typer.Option(None, help="MTCNN weights folder (default: published)"),
          out: Optional[Path] = typer.Option(None, help="also write the JSON report here")) -> None:
    """Inference speed: images/s of CNN-6 and the AWing hourglass (paper size), frames/s of MTCNN."""
    import torch

    from facebench.bench import MODELS, run_bench

    devices = device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])

    def show(row: dict) -> None:
        typer.echo(f"{row['model']:>9} {row['device']:>4} batch {row['batch']:>3}: {row['images_per_s']:>10,.1f} "
                   f"images/s, median {row['median_latency_ms']:.2f} ms per call ({row['device_name']})", err=True)

    report = run_bench(list(models or MODELS), devices, batch_size, seconds, weights, min_face, progress=show)
    text = json.dumps(report, indent=2)
    if out:
        from facebench.atomic import atomic_write_text

        atomic_write_text(out, text + "\n")
    typer.echo(text)


@app.command()
def server(port: int = typer.Option(5000), host: str = typer.Option("127.0.0.1", help="bind address (a "
                                                                   "cluster's nodes need one they reach)"),
           backend_store_uri: Optional[str] = typer.Option(None, help="database of runs (default: the "
                                                           "project's sqlite mlflow.db)"),
           artifacts_destination: Optional[str] = typer.Option(None, help="where the server keeps artifacts "
                                                               "(default: the project's mlartifacts/)"),
           workers: int = typer.Option(2, help="server processes"),
           params_file: Path = ParamsOpt) -> None:
    """Serve MLflow for this project: the dashboard, and the tracking server a cluster's runs log to
    (MLFLOW_TRACKING_URI=http://<host>:<port>). Artifacts go over HTTP (--serve-artifacts), so workers need
    no shared disk for them. Binds 127.0.0.1 unless told otherwise."""
    from facebench.tracking import local_artifacts, local_store_uri

    project = params_file.resolve().parent
    backend = backend_store_uri or local_store_uri(project)
    artifacts = artifacts_destination or local_artifacts(project).as_uri()
    # MLflow 3 accepts Host headers of localhost and private IPs (a cluster's), not public names
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", backend, "--serve-artifacts", "--artifacts-destination", artifacts]
    typer.echo(f"MLflow on http://{host}:{port} (runs in {backend}, artifacts in {artifacts}); "
               f"runs log to it with MLFLOW_TRACKING_URI=http://{host}:{port}", err=True)
    raise typer.Exit(subprocess.call(cmd))


app.command("ui", help="The same as `server`: the MLflow dashboard for this project.")(server)


def main() -> None:
    """The `facebench` entry point: the app, then a quick exit. Exit functions run (logging, MLflow,
    Ray's shutdown) and the streams are flushed, but the interpreter's teardown of torch, Ray, MLflow and
    Arrow (about a second per stage on 2 cores, 30 to 60 s of a default `dvc repro`) is skipped."""
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
