"""The claims study's report: reports/claims.md and .html, one figure per question in reports/claims/.

It reads study/<question>.json (facebench/study.py: every cell's validation and test score and the computed
findings) and words what is there: nothing here decides a finding. Each question gets its figure (the test
metric against the question's axis, one line per loss, head or ablation, the seeds' spread as a band),
its findings point by point, and the runs it came from. A cell trained with other training code than the
code in the working tree now is marked, as the leaderboard marks its rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facebench.atomic import atomic_write_bytes, atomic_write_text
from facebench.report import document
from facebench.report.cells import DASH, OTHER_CODE
from facebench.report.document import Block, Heading, Image, Para, Table
from facebench.report.figures import new_figure, png_bytes
from facebench.study import summary

QUESTIONS = ("wing", "cosface", "awing")
FOLDER = "claims"  # the figures' folder under reports/

TITLE = {
    "wing": "Wing against L1 and L2 as training lengthens (Feng et al., CVPR 2018)",
    "cosface": "Softmax, NSL, CosFace and ArcFace against the number of identities and the scale s "
               "(Wang et al., CVPR 2018)",
    "awing": "The Adaptive Wing ablations against network width and training length (Wang et al., ICCV 2019)",
}

PAPER_SAYS = {
    "wing": "The paper: with CNN-6 on AFLW, Wing 1.88 < L1 2.00 < L2 2.41 (NME %, lower is better); it argues "
            "Wing's gain comes from the small and medium errors that remain late in training.",
    "cosface": "The paper: trained on CASIA-WebFace's 10,575 identities with s=64, LMCL (CosFace) 99.33 against "
               "Softmax 97.88 on LFW (the leaderboard's figures, not verified against the paper), and a margin m > 0 "
               "above NSL (m = 0); it gives a lower bound on s that grows with the number of classes.",
    "awing": "The paper: on 300-W, the weighted loss map, the boundary map and CoordConv each lower the NME of its "
             "4-stack hourglass of 256 features, trained for 240 epochs.",
}

AXIS = {"wing": "training length (x the default's epochs)", "awing": "training length (x the default's epochs)",
        "cosface": "identities in the training set"}

SYSTEM_COLOR = {"L2": "tab:blue", "L1": "tab:orange", "Wing": "tab:red", "Softmax": "tab:gray", "NSL": "tab:green",
                "CosFace": "tab:red", "ArcFace": "tab:purple", "AWing (full)": "tab:brown", "no boundary": "tab:blue",
                "no CoordConv": "tab:orange", "no weight map": "tab:green"}

VERDICT = {"yes": "**yes**", "reversed": "**reversed**", "no difference": "no difference", "one seed": "one seed"}


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.2f}"


def _series(cells: list[dict[str, Any]], panel: str) -> dict[str, dict[float, list[float]]]:
    """system -> x -> the seeds' test scores, in the order the cells come."""
    out: dict[str, dict[float, list[float]]] = {}
    for c in cells:
        if c["panel"] == panel and c["test"] is not None:
            out.setdefault(c["system"], {}).setdefault(c["x"], []).append(c["test"])
    return out


EXTRA_PANELS = ("lr", "boundary weight", "margin")  # a cause tested beside the main axis: drawn after it


def panels_of(cells: list[dict[str, Any]]) -> list[str]:
    """The panels in the order the cells come, the main axis's first and the tested causes after."""
    seen: list[str] = []
    for c in cells:
        if c["panel"] not in seen:
            seen.append(c["panel"])
    return sorted(seen, key=lambda p: (p.startswith(EXTRA_PANELS), seen.index(p)))


NICE_TICKS = (1, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30, 40, 60)

# The tested causes' panels: (panel name start, axis label, log base); the main axis is AXIS[question], base 2.
LOG_AXES = (("boundary weight", "boundary map's loss weight", 10), ("lr", "learning rate (Adam)", 10))


def figure(question: str, result: dict[str, Any]) -> bytes:
    """The question's figure: a panel per study set, width, scale or the margin sweep; the test metric (%)
    against the axis, the mean over the seeds as a line and mean ± one standard deviation as a band."""
    cells = result["cells"]
    panels = panels_of(cells)
    fig = new_figure(4.2 * len(panels) + 1.6, 3.6)
    metric = cells[0]["metric"]
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for system, by_x in _series(cells, panel).items():
            xs = sorted(by_x)
            stats = [summary(by_x[x]) for x in xs]
            mean = [100 * m for m, _ in stats]
            low = [100 * (m - s) for m, s in stats]
            high = [100 * (m + s) for m, s in stats]
            color = SYSTEM_COLOR.get(system, "tab:olive")
            ax.plot(xs, mean, marker="o", markersize=3, color=color, label=system, linewidth=1.5)
            ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)
        if panel == "margin":
            ax.set_xlabel("CosFace margin m")
        else:  # lengths, class counts, learning rates, loss weights: ratios apart, on a log axis at the points
            label, base = next(((text, b) for start, text, b in LOG_AXES if panel.startswith(start)),
                               (AXIS[question], 2))
            ax.set_xlabel(label)
            ax.set_xscale("log", base=base)
            xs = sorted({c["x"] for c in cells if c["panel"] == panel})
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        if metric != "lfw_accuracy":  # NME falls by orders of magnitude with length: a log axis keeps ratios
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ticks = [t for t in NICE_TICKS if low <= t <= high]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_title(panel, fontsize=9)
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.set_ylabel(("LFW accuracy" if metric == "lfw_accuracy" else "test NME") + " (%)")
    handles = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8,
               frameon=False)
    return png_bytes(fig)


def _point_cell(point: dict[str, Any]) -> str:
    return (f"{_pct(point['first_mean'])} vs {_pct(point['second_mean'])}: {VERDICT[point['verdict']]} "
            f"({'+' if point['gain'] >= 0 else '−'}{100 * abs(point['gain']):.2f}, spread {100 * point['spread']:.2f})")


def x_label(question: str, panel: str, x: float) -> str:
    """A point of a panel's axis as a column names it."""
    if panel == "margin":
        return f"m = {x:g}"
    if panel.startswith("lr"):
        return f"lr {x:g}"
    if panel.startswith("boundary weight"):
        return f"weight {x:.3g}"
    return f"{x:g} identities" if question == "cosface" else f"{x:g}x"


def findings_tables(question: str, result: dict[str, Any]) -> list[Block]:
    """Per panel, one row per claim: the verdict at each point of the panel's axis, then the answer."""
    blocks: list[Block] = []
    for panel in panels_of(result["cells"]):
        found = [f for f in result["findings"] if f["panel"] == panel]
        if not found:
            continue
        xs = sorted({p["x"] for f in found for p in f["points"]})
        rows = []
        for f in found:
            at = {p["x"]: p for p in f["points"]}
            rows.append([f"{f['first']} before {f['second']}"] + [_point_cell(at[x]) if x in at else DASH for x in xs]
                        + [f"**{f['finding']}**"])
        blocks.append(Table([panel] + [x_label(question, panel, x) for x in xs] + ["answer"], rows))
    return blocks


def means_table(question: str, result: dict[str, Any]) -> Table:
    """Every system's test and validation score per panel and point: mean ± sd over the seeds, and the runs."""
    cells = result["cells"]
    rows = []
    for panel in panels_of(cells):
        groups: dict[tuple[str, float], list[dict]] = {}
        for c in cells:
            if c["panel"] == panel:
                groups.setdefault((c["system"], c["x"]), []).append(c)
        for (system, x), group in groups.items():
            tests = [c["test"] for c in group if c["test"] is not None]
            vals = [c["val"] for c in group if c["val"] is not None]
            test = "{:.2f} ± {:.2f}".format(*(100 * v for v in summary(tests))) if tests else DASH
            val = "{:.2f} ± {:.2f}".format(*(100 * v for v in summary(vals))) if vals else DASH
            runs = " ".join(f"[`{c['run_id'][:8]}`](run:{c.get('experiment_id', '')}/{c['run_id']})"
                            + (f" {OTHER_CODE}" if c.get("other_code") else "") for c in group)
            rows.append([panel, system, x_label(question, panel, x), str(group[0]["epochs"]), str(len(group)), val,
                         test, runs])
    headers = ["panel", "system", "at", "epochs", "seeds", "val (%)", "test (%)", "runs"]
    return Table(headers, rows, [False, False, False, True, True, True, True, False])


def mark_other_code(result: dict[str, Any]) -> list[str]:
    """Mark each cell trained with other training code than the working tree's now (its run's code hash,
    over the sources its training imports, differs); return the tasks concerned."""
    from facebench.train.identity import code_hash, training_modules

    now: dict[str, str] = {}
    tasks = []
    for c in result["cells"]:
        task = c.get("task")
        if not task:
            continue
        now.setdefault(task, code_hash(training_modules(task)))
        c["other_code"] = c.get("code_hash") != now[task]
        if c["other_code"] and task not in tasks:
            tasks.append(task)
    return tasks


def question_section(question: str, result: dict[str, Any], image: str) -> list[Block]:
    cells = result["cells"]
    seeds = ", ".join(str(s) for s in result["seeds"])
    stale = mark_other_code(result)
    commits = sorted({c["code_version"][:8] for c in cells if c.get("code_version")})
    hashes = sorted({c["code_hash"][:12] for c in cells if c.get("code_hash")})
    devices = sorted({c["device"] for c in cells if c.get("device")})
    blocks: list[Block] = [
        Heading(2, TITLE[question]),
        Para(PAPER_SAYS[question]),
        Para(f"{len({c['key'] for c in cells})} trainings: every point is the mean over seeds {seeds} and the band "
             f"one standard deviation; the score is the test split's after the cell's last epoch (validation "
             f"beside it in the table below). MLflow experiment `{result['mlflow_experiment']}`; training code "
             + " and ".join(f"`{h}`" for h in hashes) + " (the runs' code hash"
             + (", the same for every cell" if len(hashes) == 1 else "s") + "; trained at commit "
             + ", ".join(f"`{c}`" for c in commits) + ")" + (f"; device {', '.join(devices)}" if devices else "")
             + "."),
        Image(image, f"{TITLE[question]}: test score against {AXIS[question]}"
              + ("; the margin panel: CosFace at s=64 against m" if question == "cosface" else "")
              + ", mean over the seeds, band ± one standard deviation."),
        Heading(3, "Findings"),
        Para("Each cell: the first system's mean vs the second's, whether the difference goes the paper's way"
             " beyond the seeds' spread (the sum of the two standard deviations), and by how much (+ the paper's"
             " way). The answer reads along the axis: where the paper's ordering appears and stays, or that it"
             " does not within the study's range."),
    ] + findings_tables(question, result)
    choice = result.get("margin_choice")
    if choice:
        blocks.append(Para(f"The margin chosen on validation (mean over the seeds): m = {choice['x']:g} (validation "
                           f"{_pct(choice['val_mean'])}%, test {_pct(choice['test_mean'])}%)."))
    blocks += [Heading(3, "Every point"), means_table(question, result)]
    if stale:
        blocks.append(Para(f"{OTHER_CODE} trained with other training code than this report's ({', '.join(stale)}"
                           " task): `dvc repro study/dvc.yaml` retrains those cells."))
    return blocks


def build_claims(study_dir: Path, out_dir: Path, ui: str | None = None) -> dict[str, Any]:
    """reports/claims.md and .html, and reports/claims/<question>.png, from study/<question>.json."""
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    doc: list[Block] = [
        Heading(1, "Do the papers' claims hold here?"),
        Para("The default leaderboard trains each row once and briefly, and on it three papers' central orderings"
             " do not appear. This study asks where they do: the same rows retrained at longer lengths, with more"
             " identities and other scales, wider and longer, each point with several seeds (params.yaml"
             " `study:`, facebench/study.py; `dvc repro study/dvc.yaml` reruns it). A difference no larger than"
             " the seeds' spread counts as no difference. The findings are computed from the runs, not written"
             " by hand; the leaderboard is [leaderboard.md](leaderboard.md)."),
    ]
    images: dict[str, bytes] = {}
    missing = []
    for question in QUESTIONS:
        path = study_dir / f"{question}.json"
        if not path.is_file():
            missing.append(question)
            continue
        result = json.loads(path.read_text())
        name = f"{question}.png"
        images[name] = figure(question, result)
        doc += question_section(question, result, name)
    if missing:
        doc.append(Para("Not run yet: " + ", ".join(f"`{q}` (`facebench study {q}`)" for q in missing) + "."))
    markdown = document.to_markdown(doc, ui, folder=FOLDER)
    html = document.to_html(doc, images, ui, title="facebench: do the papers' claims hold here?")
    for name, data in images.items():
        atomic_write_bytes(out_dir / FOLDER / name, data)
    atomic_write_text(out_dir / "claims.md", markdown)
    atomic_write_text(out_dir / "claims.html", html)
    return {"markdown": str(out_dir / "claims.md"), "html": str(out_dir / "claims.html"),
            "figures": [str(out_dir / FOLDER / n) for n in images], "missing": missing}
