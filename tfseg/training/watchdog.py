"""A watchdog *process* that stops a training worker whose cluster makes no progress.

A worker waiting for a missing or dead peer blocks inside TensorFlow, holding the
interpreter lock (so no Python thread or signal handler of its own can run) and
ignoring SIGTERM. This small child process (no TensorFlow) holds the deadline
instead: the worker sends ``arm SECONDS STAGE`` / ``disarm`` lines on its stdin; past
the deadline it prints the error, naming the workers that do not answer on their
port, and kills the worker (SIGKILL). It exits when the worker's pipe closes.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time


def port_answers(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def message(spec: dict, seconds: float, stage: str) -> str:
    task_type, index = spec["task"]
    silent = [address for address in spec["workers"] if not port_answers(address)]
    who = (f"not answering: {', '.join(silent)}" if silent else
           "every worker's port answers, so one is stuck or much slower (e.g. still packing the data)")
    return (f"{task_type} {index}: no progress from the cluster for {seconds:.0f} s while {stage}; a worker is "
            f"missing or died ({who}). Start every worker of TF_CONFIG's cluster (each with its own task index); "
            f"after a failure restart all of them with --resume RUN_DIR. TFSEG_WORKER_TIMEOUT sets the wait.")


def main(parent: int, spec: dict) -> None:
    deadline, seconds, stage = None, 0.0, ""
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([sys.stdin], [], [], wait)
        if ready:
            line = sys.stdin.readline()
            if not line:  # the worker finished or died
                return
            command, *rest = line.split(" ", 2)
            if command == "arm":
                seconds, stage = float(rest[0]), rest[1].strip()
                deadline = time.monotonic() + seconds
            else:
                deadline = None
        elif deadline is not None and time.monotonic() >= deadline:
            print(f"error: {message(spec, seconds, stage)}", file=sys.stderr, flush=True)
            os.kill(parent, signal.SIGKILL)
            return


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
