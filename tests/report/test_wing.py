"""The Wing paper's layout and the findings read off it, on hand-made rows with known answers."""

from __future__ import annotations

import pandas as pd

from facebench.report.document import to_markdown
from facebench.report.wing import aflw_loss_table, findings, wing_section


def _rows(nme: dict[tuple[str, bool, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"experiment": f"aflw_{m}_{l}{'_pdb' if p else ''}", "paper": "wing", "dataset": "aflw",
                          "model": m, "pdb": p, "loss": l, "variant": "", "run_id": f"{m}{l}{p}".ljust(12, "0"),
                          "seeds": 1, "metrics.test_test_nme": v} for (m, p, l), v in nme.items()])


def test_paper_ordering_is_recognised_and_broken_orderings_are_called_so():
    # The paper's CNN-6 order on AFLW test: Wing 1.88 < L1 2.00 < smooth L1 2.02 < L2 2.41.
    same = _rows({("cnn6", False, "wing"): 0.030, ("cnn6", False, "l1"): 0.031,
                  ("cnn6", False, "smooth_l1"): 0.032, ("cnn6", False, "l2"): 0.040})
    text = findings(same, "aflw", "test", "test_test_nme", "face_size")[0]
    assert "ours Wing 3.00 < L1 3.10 < smooth L1 3.20 < L2 4.00" in text and "**the same order**" in text
    swapped = _rows({("cnn6", False, "wing"): 0.033, ("cnn6", False, "l1"): 0.031,
                     ("cnn6", False, "smooth_l1"): 0.032, ("cnn6", False, "l2"): 0.040})
    assert "**not the same order**" in findings(swapped, "aflw", "test", "test_test_nme", "face_size")[0]


def test_pdb_and_second_stage_effects_count_pairs_and_average_the_change():
    rows = _rows({("cnn6", False, "l1"): 0.040, ("cnn6", True, "l1"): 0.030,      # PDB: -1.00
                  ("cnn6", False, "wing"): 0.050, ("cnn6", True, "wing"): 0.052,  # PDB: +0.20
                  ("cnn7", False, "wing"): 0.045})                                 # stage 2: -0.50
    items = findings(rows, "aflw", "test", "test_test_nme", "face_size")
    pdb = next(i for i in items if i.startswith("PDB"))
    assert "in 1 of 2 (system, loss) pairs; mean change -0.40 points" in pdb
    stage = next(i for i in items if i.startswith("The second stage"))
    assert "in 1 of 1 (system, loss) pairs; mean change -0.50 points" in stage
    wing_l1 = next(i for i in items if i.startswith("Wing below L1"))
    assert "in 0 of our 2 systems" in wing_l1  # 5.00 > 4.00 without PDB, 5.20 > 3.00 with


def test_aflw_table_puts_each_paper_figure_beside_its_own_cell():
    rows = _rows({("cnn6", False, "l1"): 0.031, ("cnn6", True, "l1"): 0.030, ("cnn7", False, "wing"): 0.02})
    table, cited = aflw_loss_table(rows)
    assert table.headers[1:4] == ["CNN-6: ours", "CNN-6: paper", "CNN-6: run"]
    l1 = table.rows[1]
    assert l1[:3] == ["L1", "3.10", "2.00"] and l1[4:6] == ["3.00", "1.89"]
    wing = table.rows[3]
    assert wing[-3:-1] == ["2.00", "1.65"]  # CNN-6/7 + Wing beside the paper's two-stage figure
    assert {n.nme_percent for n in cited} >= {2.00, 1.89, 1.65}
    markdown = to_markdown(wing_section(rows, synthetic=True))
    assert "## Wing loss paper: the paper's tables" in markdown and "300-W" not in markdown.split("Paper figures")[0]
