"""Learning-rate schedules: values at chosen steps against hand-computed ones, serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.schedules import (
    ExponentialSweep,
    PolynomialWarmup,
    TriangularCyclic,
    describe_schedule,
    make_schedule,
)


def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_polynomial_without_warmup_matches_hand_values():
    schedule = PolynomialWarmup(max_lr=0.1, total_steps=10, min_lr=0.0, power=2.0)
    # lr = 0.1 * (1 - s/10) ** 2
    np.testing.assert_allclose(
        values(schedule, [0, 5, 9, 10, 15]), [0.1, 0.025, 0.001, 0.0, 0.0], rtol=1e-6, atol=1e-9
    )


def test_polynomial_with_warmup_and_floor():
    schedule = PolynomialWarmup(max_lr=1.0, total_steps=12, min_lr=0.2, power=1.0, warmup_steps=4)
    # warm-up: 0.2 + 0.8 * s/4; decay: 0.2 + 0.8 * (1 - (s-4)/8)
    expected = [0.2, 0.4, 0.8, 1.0, 0.9, 0.5, 0.2, 0.2]
    np.testing.assert_allclose(values(schedule, [0, 1, 3, 4, 5, 9, 12, 100]), expected, rtol=1e-6)


def test_polynomial_power_09_like_fastscnn():
    schedule = PolynomialWarmup(max_lr=0.045, total_steps=1000, power=0.9)
    assert float(schedule(500)) == pytest.approx(0.045 * 0.5**0.9, rel=1e-6)


def test_cyclic_rises_and_falls_by_position():
    schedule = TriangularCyclic(min_lr=0.1, max_lr=0.5, half_cycle=4)
    steps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 400]
    expected = [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.3, 0.2, 0.1, 0.2, 0.5, 0.1]
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-6)


def test_cyclic_reverses_with_rates_that_are_not_exact_in_float():
    # The seed reversed on float equality with max_lr, which never happens for such values.
    schedule = TriangularCyclic(min_lr=1e-4, max_lr=0.3, half_cycle=3)
    lrs = values(schedule, range(13))
    assert lrs.argmax() == 3 and lrs.max() == pytest.approx(0.3)
    assert lrs[6] == pytest.approx(1e-4) and lrs[9] == pytest.approx(0.3)
    assert np.all(np.diff(lrs[:4]) > 0) and np.all(np.diff(lrs[3:7]) < 0)


def test_exponential_sweep():
    schedule = ExponentialSweep(1e-6, 1e2, 9)
    np.testing.assert_allclose(values(schedule, [0, 4, 8]), [1e-6, 1e-2, 1e2], rtol=1e-5)


@pytest.mark.parametrize(
    "schedule",
    [
        PolynomialWarmup(0.1, 100, 0.001, 0.9, 10),
        TriangularCyclic(0.01, 0.1, 7),
        ExponentialSweep(1e-5, 1.0, 50),
    ],
)
def test_schedules_serialize_round_trip(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    np.testing.assert_allclose(values(restored, [0, 3, 11, 60]), values(schedule, [0, 3, 11, 60]))


def test_optimizer_iterations_drive_the_schedule():
    optimizer = keras.optimizers.SGD(TriangularCyclic(0.1, 0.5, 4))
    optimizer.build([keras.Variable(np.zeros(2, np.float32))])
    optimizer.iterations.assign(6)
    assert float(optimizer.learning_rate) == pytest.approx(0.3)


def test_make_schedule_defaults():
    poly = make_schedule("polynomial", 0.01, 100)
    assert float(poly(0)) == pytest.approx(0.01) and float(poly(100)) == 0.0
    cyc = make_schedule("cyclic", 0.01, 80)
    assert cyc.get_config() == {"min_lr": pytest.approx(0.001), "max_lr": 0.01, "half_cycle": 10}
    peak = make_schedule("polynomial", 0.01, 100, max_lr=0.05, min_lr=0.001)
    assert float(peak(0)) == pytest.approx(0.05) and float(peak(100)) == pytest.approx(0.001)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: PolynomialWarmup(0.01, 100, min_lr=0.1), "above the maximum"),
        (lambda: TriangularCyclic(0.5, 0.1, 4), "above the maximum"),
        (lambda: TriangularCyclic(0.1, 0.5, 0), "half cycle"),
        (lambda: PolynomialWarmup(0.1, 0), "total_steps"),
        (lambda: PolynomialWarmup(0.1, 10, warmup_steps=-1), "warmup_steps"),
        (lambda: PolynomialWarmup(0.1, 10, min_lr=-1.0), ">= 0"),
        (lambda: ExponentialSweep(1.0, 0.1, 10), "exceed"),
        (lambda: make_schedule("step", 0.1, 10), "unknown schedule"),
        (lambda: make_schedule("polynomial", -0.1, 10), "> 0"),
    ],
)
def test_bad_schedule_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_a_warmup_longer_than_the_run_rises_for_the_whole_run():
    schedule = PolynomialWarmup(max_lr=1.0, total_steps=4, min_lr=0.2, power=1.0, warmup_steps=8)
    # 0.2 + 0.8 * s / 8 while s < 8: the run (steps 0..3) never reaches the peak
    expected = [0.2, 0.3, 0.4, 0.5, 0.9]
    np.testing.assert_allclose(values(schedule, [0, 1, 2, 3, 7]), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "schedule, total, per_epoch, text",
    [
        (make_schedule("polynomial", 0.045, 200), 200, 10, "lr 0.045 -> 0 poly 0.9 over 200 steps"),
        (
            make_schedule("polynomial", 0.01, 100, min_lr=1e-4, power=2.0, warmup_steps=10),
            100,
            10,
            "lr 0.0001 -> 0.01 in 10 warm-up steps, then -> 0.0001 poly 2 by step 100",
        ),
        (
            make_schedule("cyclic", 0.045, 40, min_lr=0.001, max_lr=0.01, cycle=4),
            40,
            2,
            "lr 0.001-0.01 cyclic, 8-step cycles (4 epochs; 4 steps up, 4 down)",
        ),
        (
            make_schedule("cyclic", 0.02, 80),  # defaults: 0.002-0.02, half cycle 80 // 8
            80,
            10,
            "lr 0.002-0.02 cyclic, 20-step cycles (2 epochs; 10 steps up, 10 down)",
        ),
    ],
)
def test_describe_schedule_names_the_real_range(schedule, total, per_epoch, text):
    assert describe_schedule(schedule, total, per_epoch) == (text, [])


def test_a_cyclic_run_shorter_than_one_cycle_is_warned_of():
    schedule = make_schedule("cyclic", 0.045, 2, min_lr=0.001, max_lr=0.01, cycle=4)
    _, warnings = describe_schedule(schedule, 2, 1)
    # 2 steps of a 8-step cycle: rates 0.001 and 0.001 + 0.009 / 4 = 0.00325
    assert warnings == [
        "one cycle of the cyclic schedule is 8 optimizer steps (--cycle 4 up and 4 down) but "
        "the run has only 2 (2 epochs x 1 step): the rate rises from 0.001 to 0.00325 only, "
        "never reaching 0.01; use --cycle 1 or less, or raise -e"
    ]
    _, warnings = describe_schedule(TriangularCyclic(0.1, 0.5, 4), 6, 3)
    # steps 0..5: the peak at step 4, then step 5 at 0.1 + 0.4 * 3 / 4 = 0.4
    assert len(warnings) == 1 and "reaches 0.5 but ends at 0.4, not back at 0.1" in warnings[0]
    assert describe_schedule(TriangularCyclic(0.1, 0.5, 4), 8, 4)[1] == []  # exactly one cycle


def test_a_run_no_longer_than_its_warmup_is_warned_of():
    schedule = make_schedule("polynomial", 0.045, 20, warmup_steps=30)
    _, warnings = describe_schedule(schedule, 20, 10)
    # the last step (19) of a 30-step warm-up from 0: 0.045 * 19 / 30 = 0.0285
    assert warnings == [
        "the warm-up is 30 optimizer steps (--warmup-epochs 3 x 10) but the run has only 20 "
        "(2 epochs x 10 steps): the rate rises from 0 to 0.0285, never reaches the peak 0.045 "
        "and never decays; lower --warmup-epochs or raise -e"
    ]
    assert (
        describe_schedule(make_schedule("polynomial", 0.045, 21, warmup_steps=20), 21, 10)[1] == []
    )
