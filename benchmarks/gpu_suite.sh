#!/usr/bin/env bash
# Every GPU check in one go, for a CUDA machine with facebench importable (PYTHONPATH or an install).
# Each step has its own time limit and a failed step does not stop the next; results land in $OUT_DIR.
#   OUT_DIR=/tmp/gpu benchmarks/gpu_suite.sh                       # every step
#   OUT_DIR=/tmp/gpu STEPS="prepare_w300 heatmap_train" benchmarks/gpu_suite.sh   # some of them
set -u
OUT_DIR=${OUT_DIR:-/tmp/facebench-gpu}
PY=${PY:-python3}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
STEPS=${STEPS:-all}
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  [[ "$STEPS" == all || " $STEPS " == *" $name "* ]] || return 0
  local t0=$(date +%s)
  echo "=== $name (limit ${limit}s)"
  timeout -k 10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $(( $(date +%s) - t0 ))s"; tail -n 25 "$OUT_DIR/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__)"
# 1. AFLW-Full at the paper's size (24,386 faces), prepared as raw crops in Parquet
step prepare 150 bash -c "$PY -m facebench.cli synth aflw --profile paper && $PY -m facebench.cli prepare aflw --profile paper"
# 2. CNN-6 + Wing, paper schedule settings (batch 256, bf16): Ray Train (1 GPU worker, NCCL) vs a bare loop
step train_throughput 200 $PY benchmarks/train_throughput.py --profile paper --experiment aflw_cnn6_wing --gpu \
  --epochs 6 --shuffle-buffer-batches 16 0 --out "$OUT_DIR/train_throughput.json"
# 3. inference speed (`facebench bench`): MTCNN frames/s at 640x480, min face 20, CNN-6 and the paper-size
#    hourglass images/s, batch 1 and batched, on the GPU and on this machine's CPU
step bench 120 $PY -m facebench.cli bench --device cuda --device cpu --batch-size 1 --batch-size 8 \
  --batch-size 32 --seconds 2 --out "$OUT_DIR/bench.json"
# 4. AWing stacked hourglass (paper size): training images/s and peak GPU memory
step heatmap_throughput 60 $PY benchmarks/heatmap_throughput.py --device cuda --batch-sizes 16 32 --seconds 4 \
  --out "$OUT_DIR/heatmap_throughput.json"
# 5. 300-W at the paper's size with 256-px crops (the AWing input), then the paper-profile hourglass (4 stacks,
#    256 features, AWing + weighted loss map + boundary + CoordConv, RMSprop, batch 16, bf16) through Ray Train
#    beside the bare loop, with peak GPU memory
sed 's/crop_size: 128 /crop_size: 256 /' params.yaml > params_gpu.yaml
step prepare_w300 150 bash -c "$PY -m facebench.cli synth w300 --params params_gpu.yaml --profile paper && \
  $PY -m facebench.cli prepare w300 --params params_gpu.yaml --profile paper"
step heatmap_train 330 $PY benchmarks/train_throughput.py --params params_gpu.yaml --profile paper \
  --experiment w300_hg_awing --gpu --epochs 2 --out "$OUT_DIR/heatmap_train_throughput.json"
# 6. MTCNN alone (issue 6: 100 frames/s at batch 1 on 640x480, min face 20): `facebench bench mtcnn` on the GPU
#    and this machine's CPU, then launches/syncs per frame with CUDA graphs and eagerly, timed alternately
step mtcnn_bench 90 $PY -m facebench.cli bench mtcnn --device cuda --device cpu --batch-size 1 --batch-size 8 \
  --batch-size 32 --seconds 3 --out "$OUT_DIR/mtcnn_bench.json"
step mtcnn_profile 90 $PY benchmarks/mtcnn_profile.py --device cuda --rounds 3 --seconds 2 --out "$OUT_DIR/mtcnn_profile.txt"
# 7. CosFace (issue 5): CASIA-style identities scaled to thousands (2,000 identities, 10-20 images each) and
#    LFW at its size, then the paper profile (SphereFace-20, LMCL, SGD, batch 512, bf16) through Ray Train
#    beside a bare loop over the same model and crops resident on the GPU
sed 's/casia_identities: 10575, casia_images: \[20, 70\]/casia_identities: 2000, casia_images: [10, 20]/' \
  params.yaml > params_rec.yaml
step prepare_casia 200 bash -c "$PY -m facebench.cli synth casia --params params_rec.yaml --profile paper && \
  $PY -m facebench.cli synth lfw --params params_rec.yaml --profile paper && \
  $PY -m facebench.cli prepare casia --params params_rec.yaml --profile paper && \
  $PY -m facebench.cli prepare lfw --params params_rec.yaml --profile paper"
step recognition_train 240 $PY benchmarks/train_throughput.py --params params_rec.yaml --profile paper \
  --experiment casia_cosface --gpu --epochs 3 --out "$OUT_DIR/recognition_train_throughput.json"
# 8. the tests that need a GPU (they skip elsewhere)
step gpu_tests 120 $PY -m pytest -q -p no:cacheprovider tests/data/test_transforms.py tests/data/test_heatmaps.py \
  tests/tasks tests/mtcnn
# 9. The two-stage framework (issue 3) on AFLW at its paper size (step `prepare` first): stage 1 (CNN-6) trained
#    through Ray Train beside the bare loop and kept; its predictions re-crop every face (rotation removed, box
#    corrected) for stage 2, the paper-width CNN-7, whose training is measured the same way
step stage1_train 240 $PY benchmarks/train_throughput.py --profile paper --experiment aflw_cnn6_wing --gpu \
  --epochs 20 --save-model --out "$OUT_DIR/stage1_train_throughput.json"
step recrop 120 $PY -m facebench.cli recrop aflw_cnn67_wing --profile paper --device cuda
step stage2_train 240 $PY benchmarks/train_throughput.py --profile paper --experiment aflw_cnn67_wing --gpu \
  --epochs 4 --out "$OUT_DIR/stage2_train_throughput.json"
