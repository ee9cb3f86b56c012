"""A discrete-event queue: (time, sequence) ordering makes runs deterministic."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

Action = Callable[[], None]


@dataclass
class EventQueue:
    now: float = 0.0
    _heap: list[tuple[float, int, Action]] = field(default_factory=list)
    _seq: int = 0

    def at(self, when: float, action: Action) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, action))

    def after(self, delay: float, action: Action) -> None:
        self.at(self.now + delay, action)

    def run_until(self, end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _, action = heapq.heappop(heap)
            self.now = when
            action()
        self.now = end
