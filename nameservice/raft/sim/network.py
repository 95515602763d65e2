"""The simulated network: per-link delay, loss, duplication and (asymmetric) partitions."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(slots=True)
class NetworkModel:
    """How the network treats each message. Times are in microseconds.

    Every message independently is dropped with ``drop``, else delivered after a delay drawn
    uniformly from [``delay_min``, ``delay_max``] (different delays reorder messages), and
    with probability ``duplicate`` delivered a second time after another such delay.
    """

    delay_min: int = 500
    delay_max: int = 5_000
    drop: float = 0.0
    duplicate: float = 0.0


class Network:
    """Decides the fate of each message; knows which directed links are cut."""

    def __init__(self, model: NetworkModel, rng: random.Random):
        self.model = model
        self.rng = rng
        self.cut: set[tuple[int, int]] = set()

    def deliveries(self, frm: int, to: int) -> list[int]:
        """Delays (µs) after which one sent message arrives: [] lost, two entries duplicated."""
        if (frm, to) in self.cut:
            return []
        model, rng = self.model, self.rng
        if model.drop and rng.random() < model.drop:
            return []
        delays = [rng.randint(model.delay_min, model.delay_max)]
        if model.duplicate and rng.random() < model.duplicate:
            delays.append(rng.randint(model.delay_min, model.delay_max))
        return delays

    def partition(self, groups: list[set[int]]) -> None:
        """Cut every link between nodes of different groups, both ways."""
        self.cut.clear()
        for a in groups:
            for b in groups:
                if a is not b:
                    self.cut.update((x, y) for x in a for y in b)

    def cut_one_way(self, frm: int, to: int) -> None:
        """An asymmetric fault: ``frm`` can no longer reach ``to``; ``to`` still reaches ``frm``."""
        self.cut.add((frm, to))

    def heal(self) -> None:
        self.cut.clear()
