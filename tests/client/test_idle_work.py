"""The client keeps work it does while waiting only where the steps with it were faster."""

from __future__ import annotations

import logging

import pytest

from plexus.client.idle_work import IdleWorkTrial


def run_trial(trial: IdleWorkTrial, with_it: float, without: float) -> list[bool]:
    """Feed decode steps that take `with_it` / `without` seconds until the trial decides."""
    used = []
    while trial.decision is None:
        use = trial.use(decoding=True)
        used.append(use)
        trial.observe(use, with_it if use else without)
    return used


def test_decode_steps_alternate_with_the_work_first_and_a_prefill_goes_without() -> None:
    trial = IdleWorkTrial("prefetch", trial_steps=3)
    assert trial.use(decoding=False) is False  # a prefill measures nothing
    used = run_trial(trial, 0.010, 0.012)
    assert used == [True, False] * 3


@pytest.mark.parametrize(
    ("with_it", "without", "kept"), [(0.010, 0.012, True), (0.013, 0.012, False)]
)
def test_the_faster_way_is_kept_for_every_later_step(
    with_it: float, without: float, kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    trial = IdleWorkTrial("prefetch", trial_steps=4)
    with caplog.at_level(logging.INFO, logger="plexus.client.idle_work"):
        run_trial(trial, with_it, without)
    assert trial.decision is kept
    assert all(trial.use(decoding=d) is kept for d in (True, False, True))
    trial.observe(not kept, 0.0)  # later steps no longer count
    assert trial.decision is kept
    assert ("kept" if kept else "dropped") in caplog.text


def test_one_slow_step_does_not_decide() -> None:
    trial = IdleWorkTrial("prefetch", trial_steps=5)
    for k in range(5):
        trial.observe(True, 0.5 if k == 0 else 0.010)  # one stall, else faster with it
        trial.observe(False, 0.012)
    assert trial.decision is True


def test_ties_drop_the_work() -> None:
    trial = IdleWorkTrial("prefetch", trial_steps=2)
    run_trial(trial, 0.012, 0.012)
    assert trial.decision is False


def test_a_trial_needs_steps() -> None:
    with pytest.raises(ValueError):
        IdleWorkTrial("prefetch", trial_steps=0)
