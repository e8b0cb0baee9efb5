"""TensorFlow's start-up, quiet: its C++ notices are not shown to a user unless asked for.

On a CPU machine every TensorFlow process prints, before anything useful, notices that
are not errors: "Could not find cuda drivers", "failed call to cuInit", the oneDNN and
CPU-instruction notices. Most come before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``
("All log messages before absl::InitializeLog() is called are written to STDERR"), so
setting it is not enough: while TensorFlow loads and looks for GPUs, the process's
standard error (file descriptor 2, where C++ writes) goes to a temporary file; then every
line that is not one of the known notices is written back, so real errors still show.

A user who sets ``TF_CPP_MIN_LOG_LEVEL`` themselves gets TensorFlow's output untouched.
"""
from __future__ import annotations

import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Set beside the log level when tfseg chose it, so that child processes (pack's workers, a cluster's
# workers) inherit "tfseg's choice", not "the user's", and quiet their own start-up too.
CHOSEN_BY_TFSEG = "TFSEG_CHOSE_TF_LOG_LEVEL"

# Substrings of the start-up lines that say nothing a user must act on.
NOTICES = (
    "All log messages before absl::InitializeLog() is called",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
    "oneDNN custom operations are on",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)


def is_notice(line: str) -> bool:
    return any(notice in line for notice in NOTICES)


def without_notices(text: str) -> str:
    """``text`` (captured standard error) with the start-up notice lines taken out."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_notice(line))


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and enumerate its devices with the start-up notices filtered out (see the module)."""
    user_chose = LOG_LEVEL_VARIABLE in os.environ and os.environ.get(CHOSEN_BY_TFSEG) != "1"
    if user_chose or "tensorflow" in sys.modules:
        return  # the user chose a log level, or TensorFlow already started (its notices are printed)
    os.environ[LOG_LEVEL_VARIABLE] = "2"  # INFO and WARNING logs of TensorFlow's C++ core, once it reads it
    os.environ[CHOSEN_BY_TFSEG] = "1"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe ("failed call to cuInit") happens here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(without_notices(captured.read().decode(errors="replace")))
            sys.stderr.flush()
