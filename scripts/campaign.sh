#!/usr/bin/env bash
# The cpu-128 accuracy campaign (issue 8): train, evaluate and collect each attempt, one at a time.
#
#   nohup bash scripts/campaign.sh scripts/campaign-cpu128.txt > runs/campaign.log 2>&1 &
#
# Each line of the queue file is `<name> <train.py flags>`; '#' starts a comment. For every
# attempt: train into runs/cpu-128/<name> (resumed when a checkpoint is there, skipped when
# finished), evaluate.py on the run's validation patients (both geometries), then copy the
# small result files into results/cpu-128/<name>/ for committing. Weights stay in runs/.
# DATA (kaggle_3m, for evaluation) and PACKED (tfrecords/128px) can be overridden.
set -uo pipefail
cd "$(dirname "$0")/.."
QUEUE="${1:?usage: scripts/campaign.sh QUEUE_FILE}"
DATA="${DATA:-kaggle_3m}"
PACKED="${PACKED:-tfrecords/128px}"
export TFSEG_QUIET=1

collect() {  # run folder -> results/cpu-128/<name>
  local run="$1" out="results/cpu-128/$2"
  mkdir -p "$out"
  cp "$run/config.json" "$run/metrics.json" "$run/history.csv" "$out/"
  if [ -f "$run/eval/summary.json" ]; then
    cp "$run/eval/summary.json" "$run/eval/per_patient.csv" "$run/eval/dsc.png" "$out/"
    # Overlays of the best and the worst validation case only (the report shows them; all ten would be MBs).
    mkdir -p "$out/overlays"
    python - "$run/eval" "$out/overlays" <<'PY'
import csv, shutil, sys
from pathlib import Path
rows = sorted(csv.DictReader(open(Path(sys.argv[1]) / "per_patient.csv")), key=lambda r: float(r["dsc_pre"]))
for row in {rows[0]["patient"]: rows[0], rows[-1]["patient"]: rows[-1]}.values():
    source = Path(sys.argv[1]) / "overlays" / f"{row['patient']}_montage.png"
    if source.is_file():
        shutil.copyfile(source, Path(sys.argv[2]) / source.name)
PY
  fi
}

while read -r name flags; do
  case "$name" in ''|'#'*) continue ;; esac
  run="runs/cpu-128/$name"
  echo "=== $(date -Is) $name: $flags"
  if [ -f "$run/metrics.json" ] && [ -f "$run/eval/summary.json" ]; then
    echo "already done"; collect "$run" "$name"; continue
  fi
  if [ -f "$run/state.json" ]; then
    # shellcheck disable=SC2086
    python train.py --resume "$run" || { echo "FAILED: $name (resume)"; continue; }
  elif [ ! -f "$run/metrics.json" ]; then
    # shellcheck disable=SC2086
    python train.py --preset cpu-128 --data "$PACKED" --logdir "$run" $flags || { echo "FAILED: $name"; continue; }
  fi
  python evaluate.py --model "$run" --data "$DATA" || echo "evaluation FAILED: $name"
  collect "$run" "$name"
  echo "=== $(date -Is) $name finished"
done < "$QUEUE"
