"""The accuracy campaign (issue 8): train, evaluate and collect each attempt, one at a time.

    mkdir -p runs && nohup python scripts/campaign.py scripts/campaign-cpu128.txt > runs/campaign.log 2>&1 &
    mkdir -p runs && nohup python scripts/campaign.py scripts/campaign-cpu256.txt --budget cpu-256 > runs/campaign-256.log 2>&1 &

Each line of the queue file is ``<name> <train flags>``; '#' starts a comment. For every attempt:
train with ``--preset <budget>`` (default cpu-128) into runs/<budget>/<name> (resumed when a
checkpoint is there, skipped when finished), evaluate on the run's validation patients (both
geometries), then copy the small result files into results/<budget>/<name>/ for committing
(tfseg.runs.collect_results). Weights stay in runs/. --data (kaggle_3m, for evaluation) and
--packed (default tfrecords/<the budget's image size>px) can be changed.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tfseg import runs
from tfseg.training.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]


def queue(path: Path) -> list[tuple[str, list[str]]]:
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, flags = line.partition(" ")
            entries.append((name, shlex.split(flags)))
    return entries


def tfseg(*args: str) -> bool:
    """One tfseg command in its own process (each training frees its memory when it ends)."""
    return subprocess.run([sys.executable, "-m", "tfseg", *args], cwd=ROOT).returncode == 0


def attempt(name: str, flags: list[str], data: str, packed: str, budget: str = "cpu-128") -> None:
    run = Path("runs") / budget / name
    print(f"=== {datetime.now().isoformat(timespec='seconds')} {name}: {shlex.join(flags)}", flush=True)
    if not runs.is_evaluated_run(run):
        if (run / runs.STATE).is_file() and not (run / runs.METRICS).is_file():
            trained = tfseg("train", "--resume", str(run))
        elif not (run / runs.METRICS).is_file():
            trained = tfseg("train", "--preset", budget, "--data", packed, "--logdir", str(run), *flags)
        else:
            trained = True
        if not trained:
            print(f"FAILED: {name}", flush=True)
            return
        if not tfseg("evaluate", "--model", str(run), "--data", data):
            print(f"evaluation FAILED: {name}", flush=True)
    else:
        print("already done", flush=True)
    runs.collect_results(run, Path("results") / budget / name)
    print(f"=== {datetime.now().isoformat(timespec='seconds')} {name} finished", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/campaign.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("queue", type=Path, help="queue file: one `<name> <train flags>` per line")
    parser.add_argument("--data", default="kaggle_3m", help="kaggle_3m folder for the evaluation")
    parser.add_argument("--budget", default="cpu-128", choices=sorted(PRESETS),
                        help="the train.py preset every attempt starts from; names the runs/ and results/ folders")
    parser.add_argument("--packed", default=None,
                        help="packed folder for training (default: tfrecords/<the budget's image size>px)")
    args = parser.parse_args(argv)
    packed = args.packed or f"tfrecords/{PRESETS[args.budget]['image_size']}px"
    os.chdir(ROOT)
    os.environ.setdefault("TFSEG_QUIET", "1")  # one line per epoch in the log, no progress bar
    for name, flags in queue(args.queue):
        attempt(name, flags, args.data, packed, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
