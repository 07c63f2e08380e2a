#!/usr/bin/env bash
# One prepared GPU (or TPU, or CPU) session: the benchmarks, then as much of
# `icl-jax reproduce --full` as fits in the time budget, everything written to one folder.
#
# Usage (from the repository root, jax with the accelerator's plugin installed, e.g.
# `pip install -e ".[test]" "jax[cuda12]"`):
#     bash benchmarks/gpu.sh [OUT] [BUDGET_S]
# OUT defaults to gpu_runs/<date>; BUDGET_S (default 540) is the wall-clock seconds for the whole
# script, so it fits a 10-minute device slot with time to copy OUT back.
#
# Order: device facts, benchmarks/nichani.py, benchmarks/chen.py, benchmarks/sweep.py (each with
# its own timeout), then the official experiments from the cheapest (projected on the 2-core CPU
# in benchmarks/results/full_scale_after_cpu_2core.json) to the dearest, each under the budget
# left. A run that the budget stops keeps its checkpoint: continue it on any machine with
# `icl-jax resume OUT/full/NAME`. Nothing here is needed by the tests.
set -uo pipefail

OUT=${1:-gpu_runs/$(date -u +%Y%m%d-%H%M%S)}
BUDGET=${2:-540}
START=$(date +%s)
mkdir -p "$OUT/full"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[gpu.sh] $*" | tee -a "$OUT/log.txt" >&2; }

python - > "$OUT/device.json" <<'EOF'
import json, os, platform, jax
print(json.dumps({"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
                  "python": platform.python_version(), "cpu_count": os.cpu_count()}, indent=2))
EOF
log "device: $(tr -d '\n' < "$OUT/device.json")"

bench() {  # name, timeout, command...
    local name=$1 limit=$2; shift 2
    (( $(left) > 30 )) || { log "skip $name: budget spent"; return; }
    (( limit > $(left) )) && limit=$(left)
    log "$name (up to ${limit} s)"
    timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err" || log "$name: exit $? (see $name.err)"
}
if [[ -z ${SKIP_BENCH:-} ]]; then  # SKIP_BENCH=1: the experiments only
    bench nichani 120 python benchmarks/nichani.py --rounds 3
    bench chen 150 python benchmarks/chen.py --rounds 3
    bench nichani_figs 90 python benchmarks/nichani_figs.py
    bench sweep 60 python benchmarks/sweep.py
fi

# the official experiments, cheapest first (CPU projection as the proxy for the order)
mapfile -t NAMES < <(python - <<'EOF'
import json
proj = json.load(open("benchmarks/results/full_scale_after_cpu_2core.json"))["experiments"]
from icl_jax.cli import _REUSES
names = sorted(proj, key=lambda n: proj[n]["projected_s"])
# a run that reuses another's trained model goes right after it
for user, source in _REUSES.items():
    if user in names and source in names:
        names.remove(user)
        names.insert(names.index(source) + 1, user)
print("\n".join(names))
EOF
)
for name in "${NAMES[@]}"; do
    (( $(left) > 30 )) || { log "stop before $name: budget spent"; break; }
    extra=()
    if [[ $name == chen-generalization && -f $OUT/full/chen-cw-a/metrics.json ]]; then
        extra=(--set "trained_run=$OUT/full/chen-cw-a")
    fi
    mode=(--out "$OUT/full/$name")
    [[ -f $OUT/full/$name/config.json ]] && mode+=(--resume)
    log "run $name (up to $(left) s)"
    t0=$(date +%s)
    timeout "$(left)" icl-jax run "$name" "${mode[@]}" "${extra[@]}" > "$OUT/full/$name.log" 2>&1
    rc=$?
    log "$name: exit $rc after $(( $(date +%s) - t0 )) s$([[ $rc == 124 ]] && echo ' (stopped by the budget; icl-jax resume continues it)')"
done

python - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
for name in sorted(os.listdir(os.path.join(out, "full"))):
    path = os.path.join(out, "full", name)
    if os.path.isdir(path):
        done = os.path.exists(os.path.join(path, "metrics.json"))
        wall = json.load(open(os.path.join(path, "metrics.json"))).get("train_wall_seconds") if done else None
        print(f"{name}: {'finished' if done else 'unfinished (resumable)'}" + (f", train loop {wall:.0f} s" if wall else ""))
EOF
log "done in $(( $(date +%s) - START )) s; everything is in $OUT"
