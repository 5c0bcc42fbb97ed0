#!/usr/bin/env bash
# `dvc repro` with every stage joining one local Ray cluster (RAY_ADDRESS) instead of each stage starting
# and tearing down its own Ray: on a 2-core machine that saves about 10 s per stage. The dashboard binds
# 127.0.0.1; Ray's GCS port requires the cluster's auth token (Ray's default for `ray start`). The cluster
# is stopped when this script ends, however it ends. If it cannot start, each stage falls back to its own
# local Ray (facebench.train.ray_trainer.ensure_ray).
set -u
export RAY_AUTH_MODE=token   # `ray start` turns token auth on; the stages then present ~/.ray/auth_token
cpus=$(( $(nproc) + 2 ))   # a little above the cores, as ensure_ray does, so Ray Data is not starved
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t facebench-ray.XXXXXX)

ray start --head --block --port="$port" --node-ip-address=127.0.0.1 --num-cpus="$cpus" \
  --include-dashboard=true --dashboard-host=127.0.0.1 --disable-usage-stats >"$log" 2>&1 &
ray_pid=$!
stop_ray() { kill -TERM "$ray_pid" 2>/dev/null && wait "$ray_pid" 2>/dev/null; rm -f "$log"; }
trap stop_ray EXIT

# `ray start --block` says it blocks once the cluster is up; its log also names the address to join.
for _ in $(seq 120); do
  if grep -q "block forever" "$log"; then
    address=$(grep -o "ray start --address='[^']*'" "$log" | head -1 | cut -d"'" -f2)
    export RAY_ADDRESS="${address:-127.0.0.1:$port}"
    echo "local Ray cluster at $RAY_ADDRESS ($cpus CPUs) for all stages"
    break
  fi
  kill -0 "$ray_pid" 2>/dev/null || break
  sleep 1
done
[ -n "${RAY_ADDRESS:-}" ] || { echo "could not start a shared Ray cluster (log below); each stage starts its own"; cat "$log"; }

dvc repro "$@"
