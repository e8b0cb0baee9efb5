"""Run the reference program (mateuszbuda/brain-segmentation-pytorch) under cpu-128 and record it as a tfseg run.

    python benchmarks/reference_program/run.py --reference-dir CHECKOUT --reference-python .venv-reference/bin/python \
        --data kaggle_3m --run 1

1. applies the patches of this folder to ``CHECKOUT`` (a patch already applied is skipped, so a
   second call is harmless; see README.md for why each one exists);
2. runs the program's own ``train.py`` with ``--image-size 128 --epochs 12 --batch-size 16`` and every
   other setting its default, logs and weights under ``--workdir`` (resumable: a run stopped between
   epochs continues from its last finished epoch when the same command is given again);
3. writes ``results/reference-program/run-<k>/`` in the files ``tfseg.report`` reads (config.json,
   metrics.json, history.csv, per_patient.csv) from the per-epoch records the patched program writes
   (``epochs.jsonl``). ``--collect-only`` does step 3 alone, e.g. for a run still in progress.

The DSC figures are the program's own: its per-epoch validation mean of ``utils.dsc`` per volume
(threshold by rounding, largest connected component), and per patient for the epoch whose weights
it kept (the best one).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from tfseg import runs
from tfseg.fileio import sha256_file, write_csv_atomic, write_json_atomic
from tfseg.report_reference import REFERENCE_PROGRAM_ARCH

HERE = Path(__file__).resolve().parent

SETTINGS = {"image_size": 128, "epochs": 12, "batch_size": 16}
# The program's own defaults (its train.py), recorded so the report's settings table reads like tfseg's runs.
PROGRAM_DEFAULTS = {"arch": REFERENCE_PROGRAM_ARCH, "base_filters": 32, "loss": "dice", "optimizer": "adam",
                    "lr": 1e-4, "schedule": "constant", "preset": "cpu-128", "val_cases": 10,
                    "augment": {"scale": 0.05, "rotation": 15.0, "flip": 0.5}}
EPOCH_RECORDS = "epochs.jsonl"


class ReferenceRunError(RuntimeError):
    """The reference program cannot be run or collected as asked; the message names the file and what to do."""


def patches() -> list[Path]:
    return sorted(HERE.glob("*.patch"))


def apply_patches(checkout: Path) -> list[str]:
    """Apply every patch of this folder to ``checkout`` unless already applied; names of those applied now."""
    if not (checkout / "train.py").is_file() or not (checkout / "unet.py").is_file():
        raise ReferenceRunError(f"{checkout} is not a checkout of mateuszbuda/brain-segmentation-pytorch "
                                "(no train.py / unet.py): clone it and pass its folder as --reference-dir")
    def git_apply(patch, *flags):
        return subprocess.run(["git", "apply", *flags, str(patch)], cwd=checkout, capture_output=True, text=True)

    # The patches apply in order and later ones touch the files of earlier ones, so only the last one
    # applied reverses cleanly: everything up to it is in place, everything after it is still to do.
    todo = patches()
    for index in range(len(todo) - 1, -1, -1):
        if git_apply(todo[index], "--check", "--reverse").returncode == 0:
            todo = todo[index + 1:]
            break
    for patch in todo:
        result = git_apply(patch)
        if result.returncode != 0:
            raise ReferenceRunError(f"{patch.name} does not apply to {checkout}: {result.stderr.strip()}; "
                                    "start from a clean checkout of the program's master branch")
    return [patch.name for patch in todo]


def program_command(args) -> list[str]:
    work = Path(args.workdir) / f"run-{args.run}"
    return [args.reference_python, "train.py", "--image-size", str(SETTINGS["image_size"]),
            "--epochs", str(SETTINGS["epochs"]), "--batch-size", str(SETTINGS["batch_size"]),
            "--images", str(Path(args.data).resolve()), "--logs", str((work / "logs").resolve()),
            "--weights", str((work / "weights").resolve()), "--resume"]


def read_records(path: Path) -> tuple[float | None, list[dict]]:
    """(start-up seconds of the first start, epoch records by epoch: the last one wins after a resume)."""
    if not path.is_file():
        raise ReferenceRunError(f"{path} does not exist: the program has not finished an epoch yet (or this is "
                                "not its --logs folder)")
    startup, epochs = None, {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                continue  # the last line of a run killed while writing it
            raise ReferenceRunError(f"{path}, line {number}: {err}; the file is damaged") from err
        if "startup_seconds" in entry and startup is None:
            startup = entry["startup_seconds"]
        if "epoch" in entry:
            epochs[entry["epoch"]] = entry
    return startup, [epochs[k] for k in sorted(epochs)]


def torch_version(python: str) -> str | None:
    result = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return result.stdout.strip() or None


def cpu_facts() -> dict:
    """The CPU model, whether it computes bfloat16, and its vector flags (tfseg's own machine facts)."""
    from tfseg.training.runtime import cpu_flags, cpu_has_bf16, cpu_model

    return {"cpu": cpu_model(), "cpu_bf16": cpu_has_bf16(),
            "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))}


def history_rows(epochs: list[dict]) -> list[dict]:
    """history.csv rows: cumulative training seconds and images, as tfseg's training writes them."""
    rows, seconds = [], 0.0
    for entry in epochs:
        seconds += entry["train_seconds"]
        rows.append({"epoch": entry["epoch"], "images_seen": entry["images_seen"], "train_seconds": seconds,
                     "valid_seconds": entry["valid_seconds"], "val_volume_dsc": entry["val_dsc"],
                     "val_volume_dsc_median": statistics.median(entry["val_dsc_by_patient"].values())})
    return rows


def metrics(epochs: list[dict], facts: dict, torch: str | None) -> dict:
    # The program keeps the weights of the first epoch with the highest mean (strictly greater).
    best = max(epochs, key=lambda e: (e["val_dsc"], -e["epoch"]))
    train_seconds = sum(e["train_seconds"] for e in epochs)
    return {"arch": PROGRAM_DEFAULTS["arch"], "loss": "dice", "image_size": SETTINGS["image_size"],
            "planned_epochs": SETTINGS["epochs"], "epochs": len(epochs), "best_epoch": best["epoch"],
            "best_val_volume_dsc": best["val_dsc"],
            "val_volume_dsc_median": statistics.median(best["val_dsc_by_patient"].values()),
            "val_volume_dsc_by_patient": best["val_dsc_by_patient"],
            "val_volume_dsc_by_epoch": [e["val_dsc"] for e in epochs],
            "final_val_volume_dsc": epochs[-1]["val_dsc"], "train_seconds": train_seconds,
            "images_seen": epochs[-1]["images_seen"],
            "images_per_second": epochs[-1]["images_seen"] / train_seconds if train_seconds else None,
            "precision": "float32", "torch": torch, **{k: facts[k] for k in ("cpu", "cpu_bf16")}}


def collect(args, command: list[str]) -> Path:
    work = Path(args.workdir) / f"run-{args.run}"
    startup, epochs = read_records(work / "logs" / EPOCH_RECORDS)
    if not epochs:
        raise ReferenceRunError(f"{work / 'logs' / EPOCH_RECORDS} holds no finished epoch yet")
    facts, torch = cpu_facts(), torch_version(args.reference_python)
    out = Path(args.results) / f"run-{args.run}"
    runner = ["python", "benchmarks/reference_program/run.py", "--reference-dir", args.reference_dir,
              "--reference-python", args.reference_python, "--data", args.data, "--run", str(args.run)]
    config = {
        # "seed" is the run's index: the program seeds no generator of its own (torch picks the initial
        # weights' seed at random), so runs differ by their initialisation only.
        "config": {**PROGRAM_DEFAULTS, **SETTINGS, "seed": args.run, "precision": "float32"},
        "command": shlex.join(runner),
        "program_command": shlex.join(command),
        "patches": {p.name: sha256_file(p) for p in patches()},
        "startup_seconds": startup,
        "finished": len(epochs) == SETTINGS["epochs"],
        "machine": {**facts, "cpu_count": __import__("os").cpu_count(), "python": platform.python_version(),
                    "torch": torch, "platform": platform.platform()},
        "precision_policy": "float32",
    }
    write_json_atomic(out / runs.CONFIG, config)
    write_json_atomic(out / runs.METRICS, metrics(epochs, facts, torch))
    write_csv_atomic(out / runs.HISTORY, history_rows(epochs))
    best = max(epochs, key=lambda e: (e["val_dsc"], -e["epoch"]))
    write_csv_atomic(out / runs.PER_PATIENT, [{"patient": p, "dsc_pre": d}
                                               for p, d in sorted(best["val_dsc_by_patient"].items())])
    print(f"{out}: {len(epochs)} of {SETTINGS['epochs']} epochs, best mean DSC {best['val_dsc']:.4f} "
          f"(epoch {best['epoch']}), {sum(e['train_seconds'] for e in epochs) / 60:.1f} min of training")
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", required=True, help="a checkout of mateuszbuda/brain-segmentation-pytorch")
    parser.add_argument("--reference-python", default=".venv-reference/bin/python",
                        help="python of the program's own environment (benchmarks/requirements-reference.txt)")
    parser.add_argument("--data", required=True, help="the kaggle_3m folder")
    parser.add_argument("--run", type=int, required=True, help="run index k: results/reference-program/run-<k>")
    parser.add_argument("--workdir", default="runs/reference-program", help="logs and weights (not committed)")
    parser.add_argument("--results", default="results/reference-program", help="where the run's records go")
    parser.add_argument("--collect-only", action="store_true", help="write the records of a run so far, run nothing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        checkout = Path(args.reference_dir)
        command = program_command(args)
        if not args.collect_only:
            applied = apply_patches(checkout)
            print("patches applied: " + (", ".join(applied) or "none (already applied)"))
            work = Path(args.workdir) / f"run-{args.run}"
            work.mkdir(parents=True, exist_ok=True)
            with open(work / "train.log", "a") as log:
                code = subprocess.run(command, cwd=checkout, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                raise ReferenceRunError(f"the program exited with {code}; its output is in {work / 'train.log'}")
        collect(args, command)
    except ReferenceRunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
