"""Export a trained network as a TensorFlow SavedModel for serving.

    python -m tfseg.export RUN_DIR        # RUN_DIR/best.keras -> RUN_DIR/export

Signature ``serving_default``: ``image`` float32 (None, H, W, 3) preprocessed
slices -> ``probabilities`` float32 (None, H, W, 1). Inspect it with
``saved_model_cli show --dir RUN_DIR/export --all``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import keras
import tensorflow as tf

import tfseg.losses  # noqa: F401  (registers custom objects for load_model)
import tfseg.metrics  # noqa: F401
import tfseg.models  # noqa: F401


def export_saved_model(model: keras.Model, out_dir: str | os.PathLike) -> Path:
    """Write ``model`` (one output) as a SavedModel to ``out_dir``, atomically (temporary folder, then rename)."""
    out_dir = Path(out_dir)
    _, height, width, channels = model.inputs[0].shape
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, height, width, channels), tf.float32, name="image")

    def serve(image):
        return {"probabilities": tf.cast(model(image, training=False), tf.float32)}

    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    tmp = out_dir.with_name(f".{out_dir.name}-tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(str(tmp), verbose=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def export_run(run_dir: str | os.PathLike) -> Path:
    """Export ``RUN_DIR/best.keras`` to ``RUN_DIR/export``."""
    run_dir = Path(run_dir)
    source = run_dir / "best.keras"
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist: {run_dir} is not a finished training run "
                                "(train with `python train.py --logdir DIR` first)")
    model = keras.models.load_model(source, compile=False)
    out = export_saved_model(model, run_dir / "export")
    print(f"exported {source} -> {out}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfseg.export", description="Export RUN_DIR/best.keras "
                                     "as a SavedModel in RUN_DIR/export.")
    parser.add_argument("run_dir", help="a training run folder (holds best.keras)")
    args = parser.parse_args(argv)
    try:
        export_run(args.run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
