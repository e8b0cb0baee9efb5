"""The training-time model: the segmentation network wrapped so that augmentation runs inside the train step.

Keras's ``fit`` calls ``AugmentedTrainer.train_step``, which augments the batch with
`tfseg.training.augment.Augment` on whatever device runs the step, then does the
standard step on the wrapped network. Only the wrapped network is ever saved.
"""
from __future__ import annotations

import keras

from tfseg.training.augment import Augment


@keras.saving.register_keras_serializable(package="tfseg")
class AugmentedTrainer(keras.Model):
    """Wraps a segmentation network so augmentation runs inside the training step.

    ``train_step`` augments the batch (on the accelerator when there is one), then
    does the standard Keras step; evaluation and prediction see the raw inputs.
    With deep supervision the single mask target is repeated for every output.
    Only the wrapped ``net`` is saved for inference.
    """

    def __init__(self, net: keras.Model, augment: Augment, **kwargs):
        super().__init__(**kwargs)
        self.net, self.augment = net, augment
        self.n_outputs = len(net.outputs)

    def call(self, inputs, training=False):
        return self.net(inputs, training=training)

    def _targets(self, mask):
        return mask if self.n_outputs == 1 else tuple([mask] * self.n_outputs)

    def train_step(self, data):
        image, mask = data
        image, mask = self.augment(image, mask, training=True)
        return self._multi_worker_logs(super().train_step((image, self._targets(mask))))

    def test_step(self, data):
        image, mask = data
        return self._multi_worker_logs(super().test_step((image, self._targets(mask))))

    # (image, mask) of one local batch, set before fit() under a multi-worker strategy.
    example_batch = None

    def _multi_worker_logs(self, logs):
        # Under MultiWorkerMirroredStrategy Keras averages each log over replicas with
        # strategy.reduce("MEAN", value, axis=0), which fails on a scalar (Keras 3.x); a (1,)
        # value reduces to the same scalar. Elsewhere the logs are left alone.
        if self.example_batch is None:
            return logs
        return {name: keras.ops.reshape(value, (1,)) for name, value in logs.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds the model from the first distributed batch, averaged with an eager
        # cross-replica reduce; MultiWorkerMirroredStrategy cannot reduce eagerly (TF 2.21:
        # "Attempt to convert a value (PerReplica...)"), and the batch would be lost to the
        # stream. A local example batch has the same shapes.
        if iterator is not None and self.example_batch is not None:
            iterator, data_batch = None, self.example_batch
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
