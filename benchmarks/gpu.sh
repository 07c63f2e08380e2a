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
# its own timeout; SKIP_BENCH=1 skips them), then the official runs that figures/full does not hold
# yet (experiments, then variants, cheapest first by training steps × runs), then the finished
# experiments again (cheapest first, projected on the 2-core CPU in
# benchmarks/results/full_scale_after_cpu_2core.json), each under the budget left. A run that the budget stops keeps its checkpoint: continue it on any machine with
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

# the official runs not yet committed in figures/full first (experiments, then variants; cheapest
# first by training steps × runs), then the finished experiments again for a GPU-vs-CPU check
# (cheapest first by their CPU projection); one line per run: name, experiment, --set keys, subfolder
mapfile -t RUNS < <(python - <<'EOF'
import json, math, os
from icl_jax.cli import _REUSES
from icl_jax.experiments import list_experiments
from icl_jax.experiments.lanes import run_steps
from icl_jax.experiments.variants import VARIANTS

proj = json.load(open("benchmarks/results/full_scale_after_cpu_2core.json"))["experiments"]
committed = lambda folder: os.path.exists(os.path.join("figures", "full", folder, "metrics.json"))  # noqa: E731
exps = {e.name: e for e in list_experiments()}
pending = sorted((n for n in exps if not committed(n)), key=lambda n: run_steps(exps[n].official))
variants = sorted((v for v in VARIANTS if not committed(f"variants/{v.name}")), key=lambda v: run_steps(v.config()))
done = sorted((n for n in exps if committed(n)), key=lambda n: proj.get(n, {}).get("projected_s", math.inf))
for user, source in _REUSES.items():  # a run that reuses another's trained model goes right after it
    for names in (pending, done):
        if user in names and source in names:
            names.remove(user)
            names.insert(names.index(source) + 1, user)
rows = [(n, n, "", "full/") for n in pending]
rows += [(v.name, v.experiment, " ".join(f"{k}={x}" for k, x in v.overrides.items()), "full/variants/") for v in variants]
rows += [(n, n, "", "full/") for n in done]
print("\n".join("\t".join(row) for row in rows))
EOF
)
log "order: $(printf '%s\n' "${RUNS[@]}" | cut -f1 | paste -sd' ')"
for row in "${RUNS[@]}"; do
    IFS=$'\t' read -r name exp sets sub <<< "$row"
    (( $(left) > 30 )) || { log "stop before $name: budget spent"; break; }
    extra=()
    for kv in $sets; do extra+=(--set "$kv"); done
    if [[ $name == chen-generalization && -f $OUT/full/chen-cw-a/metrics.json ]]; then
        extra+=(--set "trained_run=$OUT/full/chen-cw-a")
    fi
    dir=$OUT/$sub$name
    mode=(--out "$dir")
    [[ -f $dir/config.json ]] && mode+=(--resume)
    mkdir -p "$OUT/$sub"
    log "run $name (up to $(left) s)"
    t0=$(date +%s)
    timeout "$(left)" icl-jax run "$exp" "${mode[@]}" "${extra[@]}" > "$dir.log" 2>&1
    rc=$?
    log "$name: exit $rc after $(( $(date +%s) - t0 )) s$([[ $rc == 124 ]] && echo ' (stopped by the budget; icl-jax resume continues it)')"
done

python - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
out = sys.argv[1]
full = os.path.join(out, "full")
extra = os.path.join(full, "variants")
for name in sorted(n for n in os.listdir(full) if n != "variants") + (sorted("variants/" + v for v in os.listdir(extra)) if os.path.isdir(extra) else []):
    path = os.path.join(full, name)
    if os.path.isdir(path):
        done = os.path.exists(os.path.join(path, "metrics.json"))
        wall = json.load(open(os.path.join(path, "metrics.json"))).get("train_wall_seconds") if done else None
        print(f"{name}: {'finished' if done else 'unfinished (resumable)'}" + (f", train loop {wall:.0f} s" if wall else ""))
EOF
log "done in $(( $(date +%s) - START )) s; everything is in $OUT"
