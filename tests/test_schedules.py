"""tfseg.training.schedules: every schedule is planned over the run's steps and ends where it should."""
import math

import numpy as np
import pytest

from tfseg.training.schedules import FLOOR, WARMUP_START, PlannedSchedule, epochs_that_fit


def lr(schedule, step):
    return float(np.asarray(schedule(step)))


def test_cosine_starts_at_the_peak_and_reaches_its_floor_exactly_at_the_last_step():
    schedule = PlannedSchedule(3e-4, total_steps=12 * 208, kind="cosine")
    assert lr(schedule, 0) == pytest.approx(3e-4)
    assert lr(schedule, 12 * 208 - 1) == pytest.approx(FLOOR * 3e-4, rel=1e-5)
    assert lr(schedule, 6 * 208) == pytest.approx(3e-4 * (FLOOR + (1 - FLOOR) * 0.5), rel=1e-3)


def test_cosine_decreases_monotonically():
    schedule = PlannedSchedule(1e-3, total_steps=100, kind="cosine")
    values = [lr(schedule, s) for s in range(100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_onecycle_warms_up_linearly_over_30_percent_then_decays_to_the_floor():
    schedule = PlannedSchedule(1e-3, total_steps=1000, kind="onecycle")
    assert lr(schedule, 0) == pytest.approx(1e-3 * WARMUP_START)
    assert lr(schedule, 150) == pytest.approx(1e-3 * (WARMUP_START + (1 - WARMUP_START) * 0.5), rel=1e-4)
    assert lr(schedule, 300) == pytest.approx(1e-3)
    assert lr(schedule, 999) == pytest.approx(FLOOR * 1e-3, rel=1e-5)


def test_warmup_steps_apply_to_constant_and_cosine():
    constant = PlannedSchedule(1e-4, total_steps=100, kind="constant", warmup_steps=10)
    assert lr(constant, 0) == pytest.approx(1e-4 * WARMUP_START)
    assert lr(constant, 10) == lr(constant, 99) == pytest.approx(1e-4)
    cosine = PlannedSchedule(1e-4, total_steps=100, kind="cosine", warmup_steps=10)
    assert lr(cosine, 10) == pytest.approx(1e-4)
    assert lr(cosine, 99) == pytest.approx(FLOOR * 1e-4, rel=1e-5)


def test_replan_moves_the_floor_to_the_new_last_step():
    schedule = PlannedSchedule(1e-3, total_steps=16 * 100, kind="cosine")
    schedule.replan(5 * 100)
    assert schedule.total_steps == 500
    assert lr(schedule, 499) == pytest.approx(FLOOR * 1e-3, rel=1e-5)
    assert lr(schedule, 250) > lr(schedule, 400)


def test_schedule_config_round_trips():
    schedule = PlannedSchedule(2e-4, total_steps=300, kind="onecycle", warmup_steps=30)
    clone = PlannedSchedule(**schedule.get_config())
    assert [lr(clone, s) for s in (0, 30, 299)] == pytest.approx([lr(schedule, s) for s in (0, 30, 299)])


def test_unknown_kind_and_empty_plan_are_errors():
    with pytest.raises(ValueError, match="constant, cosine or onecycle"):
        PlannedSchedule(1e-3, 10, kind="linear")
    with pytest.raises(ValueError, match="at least one step"):
        PlannedSchedule(1e-3, 0)


def test_epochs_that_fit_counts_whole_epochs_within_bounds():
    assert epochs_that_fit(60 * 60, 7 * 60, max_epochs=12) == 8
    assert epochs_that_fit(60 * 60, 2 * 60, max_epochs=12) == 12
    assert epochs_that_fit(60, 600, max_epochs=12) == 1
    assert math.isclose(epochs_that_fit(100, 0, max_epochs=5), 5)
