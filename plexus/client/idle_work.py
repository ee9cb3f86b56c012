"""Whether work the client does while it waits for the last server pays, on this machine.

The client can read the LM head into the CPU's cache while the last server computes
(`ClientHead.prefetch`), so that the logits run faster once its reply is in. Whether that
pays depends on the machine: on one 2-vCPU VM it took the head from 1.3 to 0.8 ms a step, on
another it saved nothing and, where the servers' threads use every core, cost the last
server a core for 1.2 ms a step (docs/performance.md, "stop 20"). So the client measures:
its first decode steps alternate with and without the work, and the work is kept only if
the steps with it were faster (medians, so one slow step decides nothing).
"""

from __future__ import annotations

import logging
import statistics

log = logging.getLogger(__name__)

TRIAL_STEPS = 8
"""Decode steps measured each way before deciding (16 in all)."""


class IdleWorkTrial:
    """Decides, from timed decode steps, whether to run the idle-time work."""

    def __init__(self, name: str, trial_steps: int = TRIAL_STEPS) -> None:
        if trial_steps < 1:
            raise ValueError("trial_steps must be at least 1")
        self.name = name
        self.trial_steps = trial_steps
        self.decision: bool | None = None  # None while the trial runs
        self._seconds: dict[bool, list[float]] = {True: [], False: []}

    def use(self, decoding: bool) -> bool:
        """Whether the next step runs the work. During the trial decode steps alternate
        (with it first) and other steps (a prefill) go without it."""
        if self.decision is not None:
            return self.decision
        if not decoding:
            return False
        return len(self._seconds[True]) <= len(self._seconds[False])

    def observe(self, used: bool, seconds: float) -> None:
        """A decode step took `seconds`, with the work if `used`."""
        if self.decision is not None:
            return
        self._seconds[used].append(seconds)
        with_it, without = self._seconds[True], self._seconds[False]
        if min(len(with_it), len(without)) >= self.trial_steps:
            on, off = statistics.median(with_it), statistics.median(without)
            self.decision = on < off
            log.info(
                "%s while waiting: %s (decode step median %.2f ms with it, %.2f ms without)",
                self.name,
                "kept" if self.decision else "dropped",
                on * 1e3,
                off * 1e3,
            )
