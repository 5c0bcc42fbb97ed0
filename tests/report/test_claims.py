"""The claims study's report (report/claims.py) from hand-made study results."""

from __future__ import annotations

import json
from pathlib import Path

from facebench.report.claims import build_claims
from facebench.study import findings
from facebench.train.identity import code_hash, training_modules


def _cells(code: str) -> list[dict]:
    cells = []
    # Wing 0.20/0.05 against L2 0.10/0.08 at lengths 1 and 4, three seeds each (+-0.01)
    for seed, d in enumerate((-0.01, 0.0, 0.01)):
        for system, x, test in (("Wing", 1.0, 0.20), ("L2", 1.0, 0.10), ("Wing", 4.0, 0.05), ("L2", 4.0, 0.08)):
            cells.append({"key": f"study-{system}-x{x:g}-seed{seed}", "panel": "aflw_small", "system": system,
                          "x": x, "seed": seed, "test": test + d, "val": test + d + 0.01, "epochs": int(3 * x),
                          "metric": "test_test_nme", "higher_is_better": False, "run_id": f"{seed}{system}{x:g}" * 4,
                          "experiment_id": "7", "code_version": "abcdef0123", "code_hash": code,
                          "task": "landmarks", "device": "CPU x1"})
    return cells


def _write(study: Path, code: str) -> None:
    cells = _cells(code)
    result = {"question": "wing", "profile": "default", "seeds": [0, 1, 2],
              "mlflow_experiment": "facebench-study/wing", "cells": cells, "findings": findings("wing", cells)}
    study.mkdir(exist_ok=True)
    (study / "wing.json").write_text(json.dumps(result))


def test_claims_report(tmp_path):
    _write(tmp_path / "study", code_hash(training_modules("landmarks")))
    out = build_claims(tmp_path / "study", tmp_path / "reports")
    md = (tmp_path / "reports" / "claims.md").read_text()
    assert md.startswith("# Do the papers' claims hold here?")
    # the computed finding and its two points, in the table's words
    assert "| Wing before L2 | 20.00 vs 10.00: **reversed** (−10.00, spread 2.00) |" in md
    assert "| aflw_small | 1x | 4x | answer |" in md  # one findings table per panel, its axis in the header
    assert "5.00 vs 8.00: **yes** (+3.00, spread 2.00) | **holds from 4 on** |" in md
    assert "![" in md and "(claims/wing.png)" in md
    png = tmp_path / "reports" / "claims" / "wing.png"
    assert png.read_bytes().startswith(b"\x89PNG") and out["missing"] == ["cosface", "awing"]
    assert "Not run yet: `cosface` (`facebench study cosface`), `awing`" in md
    assert "‡" not in md  # trained with the code in the tree now
    html = (tmp_path / "reports" / "claims.html").read_text()
    assert "<title>facebench: do the papers&#x27; claims hold here?</title>" in html and "data:image/png;base64" in html


def test_cells_of_other_code_are_marked(tmp_path):
    _write(tmp_path / "study", "0" * 64)
    build_claims(tmp_path / "study", tmp_path / "reports")
    md = (tmp_path / "reports" / "claims.md").read_text()
    assert "‡ trained with other training code than this report's (landmarks task)" in md
