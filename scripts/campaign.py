"""The cpu-128 accuracy campaign (issue 8): train, evaluate and collect each attempt, one at a time.

    mkdir -p runs && nohup python scripts/campaign.py scripts/campaign-cpu128.txt > runs/campaign.log 2>&1 &

Each line of the queue file is ``<name> <train flags>``; '#' starts a comment. For every attempt:
train into runs/cpu-128/<name> (resumed when a checkpoint is there, skipped when finished), evaluate
on the run's validation patients (both geometries), then copy the small result files into
results/cpu-128/<name>/ for committing (tfseg.runs.collect_results). Weights stay in runs/.
--data (kaggle_3m, for evaluation) and --packed (tfrecords/128px) can be changed.
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


def attempt(name: str, flags: list[str], data: str, packed: str) -> None:
    run = Path("runs") / "cpu-128" / name
    print(f"=== {datetime.now().isoformat(timespec='seconds')} {name}: {shlex.join(flags)}", flush=True)
    if not runs.is_evaluated_run(run):
        if (run / runs.STATE).is_file() and not (run / runs.METRICS).is_file():
            trained = tfseg("train", "--resume", str(run))
        elif not (run / runs.METRICS).is_file():
            trained = tfseg("train", "--preset", "cpu-128", "--data", packed, "--logdir", str(run), *flags)
        else:
            trained = True
        if not trained:
            print(f"FAILED: {name}", flush=True)
            return
        if not tfseg("evaluate", "--model", str(run), "--data", data):
            print(f"evaluation FAILED: {name}", flush=True)
    else:
        print("already done", flush=True)
    runs.collect_results(run, Path("results") / "cpu-128" / name)
    print(f"=== {datetime.now().isoformat(timespec='seconds')} {name} finished", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/campaign.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("queue", type=Path, help="queue file: one `<name> <train flags>` per line")
    parser.add_argument("--data", default="kaggle_3m", help="kaggle_3m folder for the evaluation")
    parser.add_argument("--packed", default="tfrecords/128px", help="packed 128 px folder for training")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    os.environ.setdefault("TFSEG_QUIET", "1")  # one line per epoch in the log, no progress bar
    for name, flags in queue(args.queue):
        attempt(name, flags, args.data, args.packed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
