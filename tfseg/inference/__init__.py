"""Inference: load a trained model and predict with it, the one way every command does.

* :mod:`~tfseg.inference.model`: :class:`LoadedModel`, the one model type (a Keras
  network, a SavedModel export or an ensemble of them; ``predict`` (B, N, N, 3·K)
  float32 -> probabilities), and :class:`ModelLoadError`, the one error of loading;
* :mod:`~tfseg.inference.loading`: :func:`load_model` for a run folder, an export, a
  ``.keras`` file, or several of them (an ensemble);
* :mod:`~tfseg.inference.views`: the prediction views (the image, its left-right flip,
  every ensemble member) of a preprocessed volume and their mean, in one fixed float32
  order (:func:`predict_views`, :func:`mean_of_views`, :func:`predict_volume`);
* :mod:`~tfseg.inference.ensemble`: the mean of several models, as a LoadedModel
  (:func:`ensemble_of`) and as one Keras model for export (:func:`average_models`).

Scoring (tfseg.evaluation), robustness, cross-validation and export load and predict
through here; this package imports none of them.
"""
from tfseg.inference.ensemble import EnsembleError, average_models, check_members, ensemble_of
from tfseg.inference.loading import load_model, open_saved_model, read_run_config, saved_model_sha256
from tfseg.inference.model import LoadedModel, ModelLoadError, PredictFn
from tfseg.inference.views import (as_sources, mean_of_views, predict_views, predict_volume, sum_in_order,
                                   views_description)

__all__ = ["EnsembleError", "LoadedModel", "ModelLoadError", "PredictFn", "as_sources",
           "average_models", "check_members", "ensemble_of", "load_model", "mean_of_views", "open_saved_model",
           "predict_views", "predict_volume", "read_run_config", "saved_model_sha256", "sum_in_order",
           "views_description"]
