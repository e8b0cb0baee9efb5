"""Shared helpers of the benchmarks: timing, machine facts, JSON results."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def add_output_argument(parser, default: str) -> None:
    """``--output NAME``: the result file under benchmarks/results/ (every benchmark has one)."""
    parser.add_argument("--output", default=default, help="file name under benchmarks/results/ (default: %(default)s)")


def images_per_second(step, batch_size: int, steps: int, warmup: int = 2) -> float:
    """Call ``step()`` ``warmup`` times untimed, then ``steps`` times timed; images/s."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - started)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write_result(name: str, payload: dict) -> Path:
    from tfseg.fileio import write_json_atomic
    from tfseg.training.runtime import machine_info

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    write_json_atomic(path, {"machine": machine_info(), "measured": time.strftime("%Y-%m-%d %H:%M:%S"), **payload})
    print(f"wrote {path}")
    return path
