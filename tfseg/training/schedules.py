"""Learning-rate schedules planned over the steps a run will actually take.

A run's budget is counted in epochs (docs/protocol.md cpu-128: 12 epochs), so every
schedule is planned over ``epochs × steps_per_epoch`` steps and reaches its end
value at the last step: a cosine ends at its floor, not part-way down. When a
run is limited by wall time instead (``--time-budget-minutes``), the number of
epochs that fit is only known after the first epoch has been timed;
:class:`PlannedSchedule` then gets :meth:`~PlannedSchedule.replan` with the new
total, and the rest of the run follows the re-planned curve to its floor.

Kinds (``lr`` is the peak):

* ``constant``: ``lr`` at every step (after the warm-up, if any).
* ``cosine``: ``lr`` decayed along half a cosine to ``floor · lr`` at the last step.
* ``onecycle``: linear warm-up from ``lr / 25`` to ``lr`` over the first
  ``warmup_steps`` (default 30% of the run, as in Smith's one-cycle policy and
  PyTorch's ``OneCycleLR``), then the cosine down to ``floor · lr``.

``warmup_steps`` applies to every kind (a cosine with warm-up is ``cosine`` plus
``--warmup-epochs``).
"""
from __future__ import annotations

import math

import keras
from keras import ops

SCHEDULES = ("constant", "cosine", "onecycle", "plateau")
FLOOR = 0.01  # the cosine ends at 1% of the peak
ONECYCLE_WARMUP_FRACTION = 0.3
WARMUP_START = 1.0 / 25.0  # warm-up starts at peak / 25 (OneCycleLR's div_factor)


@keras.saving.register_keras_serializable(package="tfseg")
class PlannedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up then constant or cosine decay, over a total step count that can be re-planned.

    Args:
        peak: the peak learning rate (``--lr``).
        total_steps: steps of the whole run (epochs × steps per epoch).
        kind: ``constant``, ``cosine`` or ``onecycle``.
        warmup_steps: linear warm-up from ``peak / 25``; None = the kind's default
            (30% of the run for ``onecycle``, none otherwise).
        floor: the cosine's final value as a fraction of ``peak``.

    Called with the optimizer's step (int), returns a float32 scalar. The total is
    held in a non-trainable variable so :meth:`replan` takes effect inside the
    compiled train step without retracing.
    """

    def __init__(self, peak: float, total_steps: int, kind: str = "cosine", warmup_steps: int | None = None,
                 floor: float = FLOOR):
        if kind not in ("constant", "cosine", "onecycle"):
            raise ValueError(f"schedule kind must be constant, cosine or onecycle, got {kind!r}")
        if total_steps < 1:
            raise ValueError(f"a schedule needs at least one step, got total_steps={total_steps}")
        self.peak, self.kind, self.floor = float(peak), kind, float(floor)
        self._warmup_arg = warmup_steps
        self.total = keras.Variable(float(total_steps), dtype="float32", trainable=False, name="schedule_total")
        self.warmup = keras.Variable(float(self._warmup_for(total_steps)), dtype="float32", trainable=False,
                                     name="schedule_warmup")

    def _warmup_for(self, total_steps: int) -> int:
        if self._warmup_arg is not None:
            return min(int(self._warmup_arg), total_steps - 1)
        return int(ONECYCLE_WARMUP_FRACTION * total_steps) if self.kind == "onecycle" else 0

    def replan(self, total_steps: int) -> None:
        """Plan the schedule over ``total_steps`` (e.g. the epochs a time budget allows)."""
        total_steps = max(int(total_steps), 1)
        self.total.assign(float(total_steps))
        self.warmup.assign(float(self._warmup_for(total_steps)))

    @property
    def total_steps(self) -> int:
        return int(keras.ops.convert_to_numpy(self.total))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total, warmup = self.total, self.warmup
        # Warm-up: linear from peak/25 at step 0 to peak at step `warmup`.
        ramp = ops.minimum(step / ops.maximum(warmup, 1.0), 1.0)
        warm = self.peak * (WARMUP_START + (1.0 - WARMUP_START) * ramp)
        if self.kind == "constant":
            after = ops.convert_to_tensor(self.peak, "float32")
        else:
            # Cosine over the steps after the warm-up; the last step (total - 1) lands exactly on the floor.
            span = ops.maximum(total - 1.0 - warmup, 1.0)
            progress = ops.clip((step - warmup) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            after = self.peak * (self.floor + (1.0 - self.floor) * cosine)
        return ops.where(step < warmup, warm, after)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "kind": self.kind,
                "warmup_steps": self._warmup_arg, "floor": self.floor}


def epochs_that_fit(budget_seconds: float, seconds_per_epoch: float, max_epochs: int) -> int:
    """Whole epochs that fit a wall-time budget, between 1 and ``max_epochs``."""
    if seconds_per_epoch <= 0:
        return max_epochs
    return max(1, min(max_epochs, int(budget_seconds // seconds_per_epoch)))
