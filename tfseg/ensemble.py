"""Ensembles: several trained networks answering as one, by the mean of their probabilities.

    python evaluate.py --model RUN_A RUN_B --out DIR           # score the ensemble
    python -m tfseg.export --ensemble RUN_A RUN_B --out DIR    # serve it as one SavedModel

Kept so that ``from tfseg.ensemble import EnsembleError`` (and the other names below) keeps
working: ensembles are part of inference now, in :mod:`tfseg.inference.ensemble` (the mean of
several loaded models, and the one Keras model that export writes). Import from
:mod:`tfseg.inference` in new code.
"""
from tfseg.inference.ensemble import EnsembleError, average_models, check_members, ensemble_of

__all__ = ["EnsembleError", "average_models", "check_members", "ensemble_of"]
