"""The DVC outputs of a row the active profile does not train.

A row's ``profiles`` (params.yaml) name the profiles that train it; the quick ``default`` leaves out the
full matrix's extra rows. DVC stages cannot depend on which profile is active, so those rows keep their
stages and these write outputs that say why nothing was trained: `dvc repro` passes over such a row in
about a second, and `dvc exp run -S profile=full` trains it. Imports nothing heavy on purpose.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from facebench.atomic import atomic_write_text, replace_dir
from facebench.config import Paths


def write_not_trained(key: str, paths: Paths, profile: str, profiles: set[str],
                      outputs: list[Path]) -> dict[str, Any]:
    """Each of ``outputs`` says why ``key`` was not trained: a folder gets NOT_TRAINED.txt (a plots folder
    stays empty, as DVC reads every file in it), a metrics file the same words as JSON."""
    why = f"{key} is not trained under profile {profile!r}; profiles {', '.join(sorted(profiles))} train it"
    for out in outputs:
        if out.suffix == ".json":
            atomic_write_text(out, json.dumps({"experiment": key, "not_trained": why}, indent=2) + "\n")
            continue
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if out.parent != paths.plots_dir(key).parent:  # a plots folder stays empty: DVC reads every file in it
            (tmp / "NOT_TRAINED.txt").write_text(why + "\n")
        replace_dir(tmp, out)
    return {"experiment": key, "not_trained": why}
