"""The MTCNN section of the leaderboard: each trained stage on its validation crops (cut from the WIDER_train
scenes held out of training), then the whole trained cascade on the test scenes (WIDER_val, evaluated once
after O-Net's last epoch) beside the published weights on the same scenes."""

from __future__ import annotations

import pandas as pd

from facebench.report.cells import DASH, cost_cell, cost_note, other_code_note, pct, run_cell, run_metric
from facebench.report.document import Block, Heading, Para, Table

STAGES = ("pnet", "rnet", "onet")
STAGE_LABEL = {"pnet": "P-Net (12 px)", "rnet": "R-Net (24 px)", "onet": "O-Net (48 px)"}
WEIGHTS_LABEL = {"trained": "trained here (P-Net, R-Net, O-Net above)",
                 "published": "published (the authors' Caffe model, trained on real WIDER FACE and CelebA)"}


def detection_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The MTCNN rows of ``collect_runs``, in cascade order."""
    if runs.empty or "task" not in runs:
        return runs.iloc[0:0]
    rows = runs[runs["task"] == "detection"].copy()
    rows["_order"] = rows["model"].map({s: i for i, s in enumerate(STAGES)})
    return rows.sort_values(["_order", "experiment"]).drop(columns="_order").reset_index(drop=True)


def detection_section(runs: pd.DataFrame) -> list[Block]:
    if runs.empty:
        return []
    blocks: list[Block] = [
        Heading(2, "MTCNN (WIDER-format scenes)"),
        Heading(3, "Each stage on its validation crops"),
        Para("Each stage trained on its crops (negatives, positives, part faces and, for O-Net, landmark faces,"
             " mixed 3:1:1:2; R-Net's and O-Net's include the hard examples the earlier stages proposed), scored"
             " after the last epoch on the **validation** crops, cut from the training scenes held out of"
             " training: face/non-face accuracy over negatives and positives, recall of the"
             " positives at p >= 0.5, RMS error of the box offsets (fractions of the crop side) and O-Net's"
             " landmark error (mean point distance over the crop side), in %."),
    ]
    rows = []
    for _, row in runs.iterrows():
        rows.append([STAGE_LABEL.get(row["model"], row["model"]), f"`{row['experiment']}`", run_cell(row), cost_cell(row),
                     pct(run_metric(row, "val_crop_accuracy")), pct(run_metric(row, "val_crop_recall")),
                     pct(run_metric(row, "val_crop_box_rmse")), pct(run_metric(row, "val_crop_landmark_nme"))])
    blocks.append(Table(["stage", "experiment", "run", "cost", "val accuracy (%)", "val recall (%)",
                         "val box RMSE (%)", "val landmark error (%)"], rows,
                        [False, False, False, False, True, True, True, True]))
    blocks.extend(cost_note(runs))
    blocks.extend(other_code_note(runs))
    cascade, official = [], False
    for _, row in runs.iterrows():
        for weights in ("trained", "published"):
            if run_metric(row, f"test_{weights}_ap_hard") is None:
                continue
            official = official or run_metric(row, f"test_{weights}_official_subsets") == 1.0
            cells = [WEIGHTS_LABEL[weights], run_cell(row)]
            cells += [pct(run_metric(row, f"test_{weights}_ap_{s}")) for s in ("easy", "medium", "hard")]
            cells.append(pct(run_metric(row, f"test_{weights}_landmark_nme")))
            faces = run_metric(row, f"test_{weights}_faces_hard")
            cells.append(f"{int(faces)}" if faces is not None else DASH)
            cascade.append(cells)
    if cascade:
        blocks += [
            Heading(3, "The cascade on the test scenes (WIDER_val): average precision"),
            Para("The whole cascade on the **test** scenes (the WIDER_val set), evaluated once after O-Net's last"
                 " epoch; no threshold or setting here was chosen on them. WIDER FACE's protocol (IoU 0.5,"
                 " all-point interpolated AP) with the authors' WIDER preset (minimum"
                 " face 10, scale factor 0.79, thresholds 0.5/0.5/0.3). "
                 + ("Subsets: the eval kit's official keep lists." if official else
                    "Synthetic scenes carry no keep lists, so the subsets here are an **approximation by face"
                    " height**: easy counts faces of 50 px and more, medium 30 and more, hard 10 and more.")
                 + " Faces a subset leaves out are ignored. Landmark error: the"
                 " five points on the faces found (IoU >= 0.5), mean distance over sqrt(box area), in %. The"
                 " published weights never saw these synthetic faces: their row is a reference for the scenes'"
                 " difficulty, not a target."),
            Table(["weights", "run", "AP easy (%)", "AP medium (%)", "AP hard (%)", "landmark NME (%)", "faces (hard)"],
                  cascade, [False, False, True, True, True, True, True]),
        ]
    return blocks
