"""Tiny Keras models for the predict and viewer tests: built and saved in well under a second, loaded in
Keras's safe mode like any tfseg model, 64 px (the phantom's slices are preprocessed to 64 x 64).

* :func:`conv_model`: an untrained two-layer conv net, whose probabilities depend on the image and differ
  on its left-right flip (so ``--tta`` and the uncertainty score have something to average and compare);
* :func:`pattern_model`: a net that answers every slice with one fixed probability map, so a test knows
  the probabilities exactly and can place components where it needs them (a rule, a suspect mask).
"""
import dataclasses
import json
from pathlib import Path

import numpy as np

SIZE = 64


def conv_model(path, seed: int = 0, size: int = SIZE) -> Path:
    """An untrained conv net (3 -> 4 -> 1 channels, sigmoid) saved as ``path`` (.keras)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    hidden = keras.layers.Conv2D(4, 5, padding="same", activation="tanh")(inputs)
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(hidden)
    keras.Model(inputs, outputs).save(path)
    return Path(path)


def pattern_model(path, pattern: np.ndarray) -> Path:
    """A net whose output is ``pattern`` ((N, N) probabilities) for every slice, saved as ``path`` (.keras).

    The image is averaged to 3 numbers and multiplied by zero weights; the pattern is the dense layer's
    bias, so the output is the pattern exactly, whatever the slice.
    """
    import keras

    pattern = np.asarray(pattern, np.float32)
    size = pattern.shape[0]
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(size * size, kernel_initializer="zeros")
    outputs = keras.layers.Reshape((size, size, 1))(dense(pooled))
    model = keras.Model(inputs, outputs)
    dense.set_weights([np.zeros((3, size * size), np.float32), pattern.ravel()])
    model.save(path)
    return Path(path)


def boxes(*regions, size: int = SIZE) -> np.ndarray:
    """An (N, N) probability map: 0 except each ``((row0, row1), (col0, col1), p)`` box set to ``p``."""
    pattern = np.zeros((size, size), np.float32)
    for (r0, r1), (c0, c1), p in regions:
        pattern[r0:r1, c0:c1] = p
    return pattern


def run_folder(run_dir, save_model, data: str = "unused") -> Path:
    """A training run folder as ``tfseg train`` leaves it for loading: ``best.keras`` (``save_model(path)``
    writes it) and ``config.json`` (the settings, a split, the command)."""
    from tfseg.training.config import TrainConfig

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True)
    save_model(run_dir / "best.keras")
    config = TrainConfig(data=data, image_size=SIZE, base_filters=4, val_cases=1, epochs=0)
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config),
                                                     "split": {"training": [], "validation": []},
                                                     "command": "tests/tiny_models.py"}))
    return run_dir
