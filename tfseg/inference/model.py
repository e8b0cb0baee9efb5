"""The one model type of tfseg.inference, :class:`LoadedModel` (one network or an ensemble), and its error."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tfseg.errors import TfsegError

# A predict function: (B, N, N, 3·K) float32 preprocessed slices -> (B, N, N) or (B, N, N, 1) probabilities.
PredictFn = Callable[[np.ndarray], np.ndarray]
# A segmenter: uint8 (S, 256, 256, 3) raw slices -> uint8 (S, 256, 256) mask, 0/255 (an export's segment_volume).
Segmenter = Callable[[np.ndarray], np.ndarray]


class ModelLoadError(TfsegError, ValueError):
    """The model path is missing, of an unknown kind, or cannot be loaded; the message names the path.

    Every error :func:`tfseg.inference.load_model` raises is one; ``EnsembleError``, the subclass,
    says that the models load but cannot form one ensemble.
    """


@dataclass
class LoadedModel:
    """A model ready to predict, with where it came from: one network, or an ensemble of them.

    ``predict``: (B, N, N, 3·K) float32 -> (B, N, N) or (B, N, N, 1) float32 probabilities,
    N = ``image_size``, K = ``context``. ``kind``:

    * ``"keras"``: ``network`` is the keras.Model;
    * ``"saved_model"``: ``saved_model`` is the loaded SavedModel (it owns the variables);
    * ``"ensemble"``: ``members`` are the loaded models, ``predict`` the mean of their
      probabilities (see :func:`tfseg.inference.ensemble.ensemble_of`); ``path`` is None.

    ``run_dir`` / ``run_config``: the training run the model belongs to (for its split), when
    it has a config.json; an ensemble belongs to no single run (``run_dir`` None) and carries
    its first member's ``run_config`` (for the data folder). ``sources``: the predict functions
    whose mean is ``predict`` (the views :func:`tfseg.inference.predict_views` takes): one per
    ensemble member, else ``[predict]``.
    """

    path: Path | None
    kind: str
    predict: PredictFn
    image_size: int
    sha256: str
    run_dir: Path | None = None
    run_config: dict | None = None
    context: int = 1
    network: object = field(default=None, repr=False)
    saved_model: object = field(default=None, repr=False)
    members: list[LoadedModel] = field(default_factory=list)
    sources: list[PredictFn] = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.sources = list(self.sources) or [self.predict]

    def describe(self) -> dict:
        """summary.json's "model" entry; an ensemble's has ``kind: "ensemble"`` and every member's own entry."""
        if self.kind == "ensemble":
            return {"kind": "ensemble", "combine": "mean of the members' probabilities", "sha256": self.sha256,
                    "image_size": self.image_size, "context": self.context,
                    "members": [m.describe() for m in self.members]}
        return {"path": str(self.path), "kind": self.kind, "sha256": self.sha256, "image_size": self.image_size,
                "context": self.context,
                "run_dir": None if self.run_dir is None else str(self.run_dir)}

    def segmenter(self) -> Segmenter:
        """The export's ``segment_volume`` signature (the whole protocol in-graph) as a numpy function.

        uint8 (S, 256, 256, 3) raw slices -> uint8 (S, 256, 256) mask, 0/255. Raises
        ModelLoadError naming the path when the model is not a SavedModel or lacks the signature.
        """
        import tensorflow as tf

        if self.saved_model is None:
            raise ModelLoadError(f"{self.path} is not a SavedModel (it is a {self.kind} model): segment_volume is "
                                 "a signature of an export; export it with `python -m tfseg.export RUN_DIR`")
        signature = find_signature(self.saved_model, self.path, "segment_volume")
        loaded = self.saved_model

        def segment(slices: np.ndarray) -> np.ndarray:
            return signature(slices=tf.constant(slices, tf.uint8))["mask"].numpy()

        segment.loaded = loaded  # the signature needs the SavedModel's variables alive as long as it is used
        return segment


def find_signature(loaded, path: Path, signature_name: str):
    """The ``signature_name`` signature of a loaded SavedModel; ModelLoadError naming ``path`` when it has none."""
    signature = loaded.signatures.get(signature_name)
    if signature is None:
        raise ModelLoadError(f"{path}: the SavedModel has no {signature_name} signature (it has "
                             f"{sorted(loaded.signatures)}); export it again with `python -m tfseg.export RUN_DIR`")
    return signature
