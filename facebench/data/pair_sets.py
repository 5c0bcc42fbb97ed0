"""Scoring an embedding function on a prepared pair set (data/prepare_identity.py writes them): LFW's
images.parquet + pairs.parquet, or a CASIA set's held-out identities, val_images.parquet + val_pairs.parquet.

This module reads the files and embeds the images; the protocol's numbers come from arrays, in
metrics/verification.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from facebench.data.parquet import decode_crops, read_metadata, read_samples
from facebench.metrics.verification import combine_flip, cosine_scores, verification_report


def evaluate_pairs(embed, prepared_dir, batch_size: int = 256, images: str = "images.parquet",
                   pairs: str = "pairs.parquet") -> dict:
    """LFW-style verification of an embedding function on a prepared pair set.

    ``embed`` maps uint8 RGB crops (N, H, W, 3) to embeddings (N, D). Each image is embedded with its
    horizontal mirror (``combine_flip``); a pair's score is the cosine of its two embeddings. Returns
    the k-fold accuracy over the file's folds (threshold chosen on the others), TAR at FAR 1e-3 and
    1e-4 over all pairs, and the ROC curve (``verification_report``). ``images`` and ``pairs`` name the two
    files in ``prepared_dir``: LFW's by default; ``images="val_images.parquet", pairs="val_pairs.parquet"``
    scores a CASIA set's validation identities (what model selection may look at; LFW is the test).
    """
    prepared_dir = Path(prepared_dir)
    images_path, pairs_path = prepared_dir / images, prepared_dir / pairs
    meta = read_metadata(images_path)
    df = read_samples(images_path, columns=["sample_id", "image"])
    pair_rows = pq.read_table(pairs_path).to_pandas()
    height, width = int(meta["crop_height"]), int(meta["crop_width"])
    embeddings = []
    for start in range(0, len(df), batch_size):
        crops = decode_crops(df["image"].iloc[start:start + batch_size], height, width, meta["image_encoding"],
                             str(images_path))
        e = np.asarray(embed(crops), dtype=np.float64)
        e_flip = np.asarray(embed(np.ascontiguousarray(crops[:, :, ::-1])), dtype=np.float64)
        embeddings.append(combine_flip(e, e_flip))
    table = np.concatenate(embeddings)
    row = {sid: i for i, sid in enumerate(df["sample_id"])}
    missing = sorted((set(pair_rows["left"]) | set(pair_rows["right"])) - set(row))
    if missing:
        raise ValueError(f"{pairs_path}: pairs name images not in {images}: {missing[:5]}")
    left = table[[row[s] for s in pair_rows["left"]]]
    right = table[[row[s] for s in pair_rows["right"]]]
    return verification_report(cosine_scores(left, right), pair_rows["same"].to_numpy(dtype=bool),
                               folds=pair_rows["fold"].to_numpy())
