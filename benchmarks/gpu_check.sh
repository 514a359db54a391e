#!/usr/bin/env bash
# One prepared GPU check (under 10 minutes on one H100/H200), or the same steps tiny on the CPU with --dry-run:
#   1. environment: torch, CUDA, bf16, NCCL, the body model;
#   2. data: held-out validation/evaluation shards (`p2m synth --poses cmu-eval` + `p2m shard`, pose-only); the
#      training batches are drawn on the GPU by the synthetic source (synthetic.ratio: 1);
#   3. bf16 training samples/s and peak GPU memory of the full config (configs/recipe_pose2mesh.yaml: the
#      original's widths) at 12,272 and at 1,229 vertices, through `torchrun --nproc_per_node=1` (NCCL on CUDA,
#      gloo on the CPU);
#   4. a chunk of the full recipe: --max-steps N1, then --resume to N2 (the resume path on the GPU), then `p2m eval`
#      from GT 2D on the held-out subjects;
#   5. results in OUT/gpu_check.json (+ the logs), one line each in OUT/gpu_check.md for BENCHMARKS.md.
#
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--python PY]
#   benchmarks/gpu_check.sh --pack .gpu     # here, before a GPU session: what the device machine lacks
#
# The device machine's python3 holds torch but not p2m's other packages, and reaches no network. --pack copies, into
# one folder (about 60 MB, under the 64 MiB a call carries): anny's code without its assets (the prepared compact
# caches replace them), roma, webdataset, braceexpand, trimesh, and the caches of the 12,272- and 1,229-vertex
# meshes. There (the folder ignored by git, named in `carry`):
#   PYTHONPATH=$PWD/.gpu/site P2M_CACHE_DIR=$PWD/.gpu/cache benchmarks/gpu_check.sh --out $OUT
set -euo pipefail

DRY=0
OUT_DIR=${OUT:-out/gpu_check}
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR=$2; shift ;;
    --python) PY=$2; shift ;;
    --pack) PACK=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run, --out DIR, --python PY)" >&2; exit 2 ;;
  esac
  shift
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
if [ -n "${PACK:-}" ]; then
  PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$PACK" <<'EOF'
import shutil, sys
from pathlib import Path
import anny, braceexpand, roma, trimesh, webdataset
from p2m.body.anny_model import anny_cache_file
from p2m.paths import cache_dir
out = Path(sys.argv[1]); site, cache = out / "site", out / "cache"
shutil.rmtree(out, ignore_errors=True)
skip = shutil.ignore_patterns("__pycache__", "soma", "mpfb2", "cached", "examples", "faceunits01")
for mod in (anny, roma, trimesh, webdataset, braceexpand):
    src = Path(mod.__file__)
    if src.name == "__init__.py":
        shutil.copytree(src.parent, site / src.parent.name, ignore=skip)
    else:
        site.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, site / src.name)
for topo in ("notoes", "notoes_collapse10pc"):
    f = anny_cache_file("cmu_mb", topo)
    (cache / "anny" / f.parent.name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(f, cache / "anny" / f.parent.name / f.name)
    for r in (cache_dir() / "body").glob(f"anny-cmu_mb-{topo}-regressors-*.safetensors"):
        (cache / "body").mkdir(parents=True, exist_ok=True)
        shutil.copy2(r, cache / "body" / r.name)
size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
print(f"{out}: {size / 2**20:.1f} MiB")
EOF
  exit 0
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export P2M_CACHE_DIR=${P2M_CACHE_DIR:-$REPO/.cache} MPLCONFIGDIR=${MPLCONFIGDIR:-$REPO/.cache/matplotlib}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/p2m-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
P2M=("$PY" -m p2m)
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1)

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; AMP=off; CONFIG=configs/tiny_pose2mesh.yaml
  TOPOLOGIES=("notoes_collapse3pc" "notoes_collapse10pc"); LOG_EVERY=1; STEPS=4; CHUNK1=3; CHUNK2=6; NEVAL=64
  SETS=("train.batch_size=16" "train.val_batch_size=64" "synthetic.batches_per_epoch=4" "train.epochs=2"
        "transform.standardize=one_scale")
else
  DEVICE=cuda; AMP=bf16; CONFIG=configs/recipe_pose2mesh.yaml
  TOPOLOGIES=("notoes" "notoes_collapse10pc"); LOG_EVERY=5; STEPS=60; CHUNK1=150; CHUNK2=300; NEVAL=2000
  SETS=("train.batch_size=64" "train.val_batch_size=256" "synthetic.batches_per_epoch=200")
fi
COMMON=("train.amp='$AMP'" "train.log_every=$LOG_EVERY" "train.ckpt_every_steps=0" "train.num_workers=0"
        "synthetic.ratio=1" "${SETS[@]}")
set_args() { local a=(); for s in "$@"; do a+=(--set "$s"); done; printf '%s\n' "${a[@]}"; }

step() { echo "== $(date +%H:%M:%S) $*" | tee -a "$LOG"; }

# --------------------------------------------------------------------------------------------- 1. environment
step "environment"
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/env.json" | tee -a "$LOG"
import json, torch
info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(device=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported(),
                nccl=torch.distributed.is_nccl_available(), memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
import p2m.body  # noqa: F401  (fails here, with the reason, when p2m's packages are missing)
print(json.dumps(info))
EOF
if [ "$DRY" = 0 ] && ! grep -q '"cuda": true' "$OUT_DIR/env.json"; then
  echo "gpu_check.sh: no CUDA device; use --dry-run on a CPU machine" >&2; exit 1
fi

# --------------------------------------------------------------------------------------------- 2. data
step "data: $NEVAL held-out samples (validation S9, evaluation S10); training batches are drawn on the device"
"${P2M[@]}" synth --out "$WORK/eval" --num "$NEVAL" --poses cmu-eval --seed 2 --subjects 2 --first-subject 9 \
  --topology 1229 --name gpueval >>"$LOG" 2>&1
"${P2M[@]}" shard "$WORK/eval" --out "$WORK/shards" --split val=S9 --split test=S10 >>"$LOG" 2>&1

# --------------------------------------------------------------------------------------------- 3. throughput
peak_mem() {  # peak GPU memory (MiB) while "$@" runs, sampled by nvidia-smi; "null" without nvidia-smi
  local file="$WORK/mem.$RANDOM"
  if command -v nvidia-smi >/dev/null && [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$file" 2>/dev/null &
    local pid=$!
    "$@"; local rc=$?
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    PEAK=$(sort -n "$file" | tail -1); return $rc
  fi
  "$@"; local rc=$?; PEAK=null; return $rc
}
declare -A PEAKS
for topo in "${TOPOLOGIES[@]}"; do
  step "throughput: $CONFIG at $topo, $STEPS steps, amp $AMP, torchrun (1 process)"
  mapfile -t args < <(set_args "${COMMON[@]}" "model.body.topology=$topo" "train.val_split=null")
  peak_mem "${TORCHRUN[@]}" -m p2m train --config "$CONFIG" --out "$WORK/tp_$topo" \
    --device "$DEVICE" --max-steps "$STEPS" --no-progress "${args[@]}" >>"$LOG" 2>&1
  PEAKS[$topo]=$PEAK
done

# --------------------------------------------------------------------------------------------- 4. recipe chunk
TOPO=${TOPOLOGIES[0]}
mapfile -t args < <(set_args "${COMMON[@]}" "model.body.topology=$TOPO" "train.val_split=val" "train.val_max_samples=256")
step "recipe chunk: $CONFIG at $TOPO to step $CHUNK1, then --resume to step $CHUNK2"
"${TORCHRUN[@]}" -m p2m train --config "$CONFIG" --data "$WORK/shards" --out "$WORK/chunk" --device "$DEVICE" \
  --max-steps "$CHUNK1" --no-progress "${args[@]}" >>"$LOG" 2>&1
"${TORCHRUN[@]}" -m p2m train --data "$WORK/shards" --out "$WORK/chunk" --device "$DEVICE" --resume \
  --max-steps "$CHUNK2" --no-progress >>"$LOG" 2>&1
step "eval from GT 2D on the held-out subjects"
"${P2M[@]}" eval "$WORK/chunk/checkpoints/last.pt" --data "$WORK/shards" --split test --input gt --device "$DEVICE" \
  --out "$WORK/chunk_eval.json" --no-progress >>"$LOG" 2>&1

# --------------------------------------------------------------------------------------------- 5. results
step "results"
PEAK_ARGS=()
for topo in "${TOPOLOGIES[@]}"; do PEAK_ARGS+=("$topo=${PEAKS[$topo]}"); done
"$PY" - "$WORK" "$OUT_DIR" "$DRY" "$CONFIG" "$AMP" "$CHUNK1" "$CHUNK2" "${PEAK_ARGS[@]}" <<'EOF' | tee -a "$LOG"
import json, statistics, sys
from pathlib import Path
work, out, dry, config, amp, c1, c2 = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", *sys.argv[4:8]
peaks = dict(a.split("=", 1) for a in sys.argv[8:])
env = json.loads((out / "env.json").read_text().strip().splitlines()[-1])
res = {"dry_run": dry, "env": env, "config": config, "amp": amp, "throughput": {}}
for topo, peak in peaks.items():
    rows = [json.loads(l) for l in (work / f"tp_{topo}" / "metrics.jsonl").read_text().splitlines() if l.strip()]
    rates = [r["samples_per_s"] for r in rows if r.get("kind") == "train" and r.get("samples_per_s")]
    res["throughput"][topo] = {"samples_per_s": round(statistics.median(rates[1:] or rates), 1),
                               "peak_gpu_mem_mib": None if peak == "null" else int(peak), "steps": rows[-1]["step"]}
chunk = [json.loads(l) for l in (work / "chunk" / "metrics.jsonl").read_text().splitlines() if l.strip()]
steps = [r["step"] for r in chunk if r.get("kind") == "train"]
ev = json.loads((work / "chunk_eval.json").read_text())
res["recipe_chunk"] = {"steps": [int(c1), int(c2)], "last_step_logged": max(steps),
                       "resumed_without_gap": sorted(set(steps)) == sorted(steps),
                       "eval_gt": {k: ev.get(k) for k in ("samples", "mpjpe", "pa_mpjpe", "mpvpe", "edge_error",
                                                          "normal_dev", "mrpe")}}
(out / "gpu_check.json").write_text(json.dumps(res, indent=1))
card = env.get("device", "CPU (dry run)")
lines = [f"| train {config} {topo} ({amp}) | {v['samples_per_s']} samples/s | peak {v['peak_gpu_mem_mib']} MiB | {card} |"
         for topo, v in res["throughput"].items()]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
print(json.dumps(res))
EOF
echo "gpu_check.sh: results in $OUT_DIR/gpu_check.json"
