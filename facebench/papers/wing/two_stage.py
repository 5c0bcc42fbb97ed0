"""The Wing loss paper's two-stage framework: the geometry between stage 1 (CNN-6) and stage 2 (CNN-7).

Stage 1 predicts the landmarks on the whole crop. From its points, the face's in-plane rotation (the
angle of the line from the image-left to the image-right eye centre) is removed and the box is
corrected: the stage-2 crop is the similarity that turns the predicted points upright and fits their
bounding square, widened by a margin on each side, to the stage-2 input. Stage 2's points in that crop
go back to the original crop by the inverse similarity.

A similarity scales every distance by one factor, so the NME of stage 2 measured in its own crop, with
the normaliser scaled by that factor, equals the NME in the original crop: the recropped sets keep the
ordinary landmark schema and every metric of the landmark task applies unchanged.

Training stage 2 on stage 1's predictions for the training faces (not on the ground truth) makes its
training crops carry the same kind of residual rotation and box error as its test crops; the usual
augmentation (rotation, scale, shift) widens that further.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from facebench.config import Paths, ResolvedExperiment
from facebench.data.parquet import (
    RAW_RGB8, ContentHash, decode_crops, file_digests, read_metadata, read_samples, to_table, write_samples,
)
from facebench.data.transforms import LandmarkBatchTransform, invert_affine, transform_points, warp_crops

# Eye centres per layout: the mean of each eye's six contour points (68-point iBUG) or the annotated
# centre (19-point AFLW-Full: LeftEyeCenter, RightEyeCenter). Image-left first.
EYE_INDICES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    68: (tuple(range(36, 42)), tuple(range(42, 48))),
    19: ((7,), (10,)),
}
STAGE2_SIZE = 128  # CNN-7's input
STAGE2_MARGIN = 0.2  # each side of the predicted shape's bounding square, as a fraction of its side (ours)


def eye_centres(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, 2) points -> image-left and image-right eye centres, each (N, 2)."""
    n_points = points.shape[1]
    if n_points not in EYE_INDICES:
        raise ValueError(f"no eye definition for a {n_points}-point layout (known: {sorted(EYE_INDICES)})")
    left, right = EYE_INDICES[n_points]
    return points[:, list(left)].mean(1), points[:, list(right)].mean(1)


def recrop_matrices(points: torch.Tensor, out_size: int = STAGE2_SIZE, margin: float = STAGE2_MARGIN) -> torch.Tensor:
    """(N, 2, 3) similarities from crop pixels to stage-2 pixels that make the eye line of ``points``
    horizontal and centre their bounding square, widened by ``margin`` of its side on each side, in an
    ``out_size`` square (pixel centres: the middle of the output is (out_size - 1) / 2)."""
    left, right = eye_centres(points)
    d = right - left
    theta = torch.atan2(d[:, 1], d[:, 0])
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)  # rotation by -theta
    upright = points @ rot.transpose(1, 2)
    lo, hi = upright.amin(1), upright.amax(1)
    side = (hi - lo).amax(1).clamp(min=1e-6) * (1 + 2 * margin)
    scale = out_size / side
    linear = scale[:, None, None] * rot
    shift = (out_size - 1) / 2 - scale[:, None] * (lo + hi) / 2
    return torch.cat([linear, shift[:, :, None]], dim=2)


def similarity_scale(matrices: torch.Tensor) -> torch.Tensor:
    """The factor by which each similarity (N, 2, 3) scales distances."""
    return torch.linalg.det(matrices[:, :, :2]).abs().sqrt()


def map_back(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Stage-2 points (N, L, 2) -> the original crop's pixels."""
    return transform_points(points, invert_affine(matrices))


@torch.no_grad()
def stage1_points(model: torch.nn.Module, crops: torch.Tensor, input_size: int) -> torch.Tensor:
    """Stage 1's points (N, L, 2) in crop pixels, for uint8 crops (N, S, S, 3) on the model's device."""
    n, size = crops.shape[0], crops.shape[1]
    dummy = torch.zeros(n, model.num_landmarks * 2, device=crops.device)
    batch = LandmarkBatchTransform(input_size, None, None)(crops, dummy, torch.ones(n, device=crops.device))
    pred = model(batch["image"]).float().reshape(n, -1, 2)
    s = input_size / size  # input pixel centre x' = s (x + 0.5) - 0.5 (transforms.resize_matrix)
    return (pred + 0.5) / s - 0.5


@torch.no_grad()
def two_stage_predict(stage1: torch.nn.Module, stage2: torch.nn.Module, crops: torch.Tensor,
                      stage1_input: int, margin: float = STAGE2_MARGIN) -> torch.Tensor:
    """Both stages on uint8 crops (N, S, S, 3): points (N, L, 2) in the crops' pixels."""
    first = stage1_points(stage1, crops, stage1_input)
    matrices = recrop_matrices(first, stage2.input_size, margin)
    images = warp_crops(crops, matrices, stage2.input_size) / 127.5 - 1.0  # as LandmarkBatchTransform
    second = stage2(images).float().reshape(len(crops), -1, 2)
    return map_back(second, matrices)


def recrop_split(src: Path, dst: Path, stage1: torch.nn.Module, stage1_input: int, stage1_key: str,
                 device: torch.device, out_size: int = STAGE2_SIZE, margin: float = STAGE2_MARGIN,
                 batch_size: int = 256) -> dict[str, float]:
    """One prepared split re-cropped (``recrop_rows``) and written alone to ``dst``, its content hash over
    that one split. Returns the mean stage-1 NME on the split and the row count."""
    table, meta, summary = recrop_rows(src, stage1, stage1_input, stage1_key, device, out_size, margin, batch_size)
    hasher = ContentHash(_recrop_params(meta, stage1_key, out_size, margin))
    hasher.add(dst.stem, table)
    write_samples(dst, table, {**meta, "content_hash": hasher.hexdigest()})
    return summary


def _recrop_params(source_meta: dict, stage1_key: str, out_size: int, margin: float,
                   stage1_sha256: str | None = None) -> dict:
    """What a re-cropped set is made from, for its content hash: the source set, stage 1, the geometry."""
    return {"source_content_hash": source_meta.get("source_content_hash"), "stage1": stage1_key,
            "stage1_sha256": stage1_sha256, "out_size": out_size, "margin": margin}


def recrop_rows(src: Path, stage1: torch.nn.Module, stage1_input: int, stage1_key: str, device: torch.device,
                out_size: int = STAGE2_SIZE, margin: float = STAGE2_MARGIN, batch_size: int = 256
                ) -> tuple[pa.Table, dict, dict[str, float]]:
    """One prepared split re-cropped for stage 2 from stage 1's predictions; same schema, raw RGB crops.

    Ground-truth points and the normaliser go through the same similarity (so NMEs carry over);
    the face box becomes the corrected box. Returns the rows, the file metadata (the source's, with
    its content hash kept as ``source_content_hash``; the caller adds the new set's) and the mean
    stage-1 NME on the split (what stage 2 starts from) with the row count."""
    meta = read_metadata(src)
    df = read_samples(src)
    size = int(meta["crop_size"])
    crops = decode_crops(df["image"], size, size, str(meta.get("image_encoding", "encoded")), str(src))
    gt = np.stack(df["landmarks"].to_numpy()).astype(np.float32).reshape(len(df), -1, 2)
    norm = df["norm"].to_numpy(dtype=np.float32)
    out_images, out_points, out_norm, out_box, stage1_nme = [], [], [], [], []
    stage1.eval()
    for i in range(0, len(df), batch_size):
        c = torch.from_numpy(crops[i:i + batch_size]).to(device)
        g = torch.from_numpy(gt[i:i + batch_size]).to(device)
        first = stage1_points(stage1, c, stage1_input)
        m = recrop_matrices(first, out_size, margin)
        scale = similarity_scale(m)
        warped = warp_crops(c, m, out_size).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        out_images.append(warped.cpu().numpy())
        out_points.append(transform_points(g, m).cpu().numpy())
        out_norm.append((torch.from_numpy(norm[i:i + batch_size].copy()).to(device) * scale).cpu().numpy())
        half = out_size / (2 * (1 + 2 * margin))
        mid = (out_size - 1) / 2
        out_box.append(np.tile([mid - half, mid - half, mid + half, mid + half], (len(c), 1)).astype(np.float32))
        err = (first - g).norm(dim=-1).mean(-1) / torch.from_numpy(norm[i:i + batch_size].copy()).to(device)
        stage1_nme.append(err.cpu().numpy())
    images = np.concatenate(out_images)
    rows = {
        **{k: _nullable(df[k]) for k in ("sample_id", "visible", "identity", "source", "split", "pose", "pdb_copy")},
        "image": [im.tobytes() for im in images],
        "height": [out_size] * len(df), "width": [out_size] * len(df),
        "landmarks": [p.reshape(-1).tolist() for p in np.concatenate(out_points)],
        "bbox": [b.tolist() for b in np.concatenate(out_box)],
        "norm": np.concatenate(out_norm).tolist(),
    }
    source_hash = meta.pop("content_hash", None)
    meta = {**meta, "crop_size": out_size, "image_encoding": RAW_RGB8, "margin": margin, "stage1": stage1_key,
            "source_content_hash": source_hash,
            "normaliser_definition": f"{meta.get('normaliser_definition', meta['normaliser'])}, times the "
                                     "stage-2 similarity's scale"}
    return to_table(rows), meta, {"rows": len(df), "stage1_nme": float(np.concatenate(stage1_nme).mean())}


def _nullable(column) -> list:
    """A pandas column as a list with missing values as None (pandas reads null ints back as NaN)."""
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in column.tolist()]


def recrop_experiment(exp: ResolvedExperiment, paths: Paths, device: torch.device) -> dict:
    """Every prepared split of ``exp.dataset`` that ``exp`` reads (``train_pdb`` for PDB rows only)
    re-cropped by the trained stage-1 model ``exp.stage1``, written whole (or not at all) to data/stage2/<exp.key>/ with a manifest."""
    from facebench.atomic import build_dir
    from facebench.papers.wing.model import CNN6, INPUT_SIZE

    src_dir = paths.prepared(exp.dataset)
    weights = paths.model_weights(exp.stage1)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: stage-1 model not found (train {exp.stage1} first)")
    # A row without PDB never reads the pose-balanced copy (the largest split): it is not re-cropped.
    splits = sorted(p for p in src_dir.glob("*.parquet") if exp.pdb or p.name != "train_pdb.parquet")
    if not splits:
        raise FileNotFoundError(f"{src_dir}: no prepared splits (run `facebench prepare {exp.dataset}`)")
    stage1 = CNN6(int(read_metadata(splits[0])["num_landmarks"]))
    stage1.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    stage1.to(device)
    stage1_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    summary: dict[str, dict[str, float]] = {}
    # Every split in memory before writing: the set's content hash, in every file, covers them all.
    made = {}
    for src in splits:
        made[src.stem] = recrop_rows(src, stage1, INPUT_SIZE, exp.stage1, device)
        summary[src.stem] = made[src.stem][2]
        print(f"[recrop {exp.key}] {src.stem}: {summary[src.stem]['rows']} faces, stage-1 NME "
              f"{100 * summary[src.stem]['stage1_nme']:.2f}%", flush=True)
    params = _recrop_params(made[splits[0].stem][1], exp.stage1, STAGE2_SIZE, STAGE2_MARGIN, stage1_sha256)
    hasher = ContentHash({**params, "experiment": exp.key})
    for stem in sorted(made):
        hasher.add(stem, made[stem][0])
    content_hash = hasher.hexdigest()
    manifest = {"experiment": exp.key, "stage1": exp.stage1, "source": str(src_dir), "splits": summary,
                "params": params, "content_hash": content_hash}

    def write(tmp: Path) -> None:
        for stem, (table, meta, _) in made.items():
            write_samples(tmp / f"{stem}.parquet", table, {**meta, "content_hash": content_hash})
        manifest["files"] = file_digests(tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    build_dir(paths.training_data(exp), write)
    return manifest
