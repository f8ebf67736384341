"""Is the run healthy? The training loss's normal range, learnt from recent steps, judges
each checkpoint: the state saved at step s is what step s+1 computes its loss with, so
that loss is its verdict. One whose loss is not finite, or above the normal range, is
*suspect*; after a divergence the run resumes (or rolls back) to the newest healthy one.

The range is robust to batch noise, to the loss's own descent and to the divergence
itself: the level (median of the last `LEVEL_STEPS` healthy losses) plus the larger of 4
noise deviations (the spread of step-to-step differences, which a falling trend does not
inflate), a quarter of the level and 0.05. With fewer than `MIN_STEPS` losses seen, any
finite loss is healthy. The range never drifts up with a slowly collapsing run: once
`ANCHOR_STEPS` losses are known, the lowest level seen (with the noise measured then) is
the anchor, and a loss above the anchor's range is suspect however many steps it took to
get there (a run that sinks to chance loss step by step stays suspect). Where the chance
loss is known (softmax: ln C, the loss of a uniform guess) and the run was clearly below
it, the range ends half-way between the anchor and chance: a model that forgot what it
learnt is never healthy, however close to chance it had been.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Optional, Sequence

STEPS = 200
MIN_STEPS = 8
LEVEL_STEPS = 20
ANCHOR_STEPS = 32


@dataclasses.dataclass(frozen=True)
class Health:
  healthy: bool
  loss: Optional[float]
  why: str = ""            # what left the normal range, for the log.

  def to_json(self) -> dict:
    return {"healthy": self.healthy, "loss": self.loss, "why": self.why}

  @classmethod
  def from_json(cls, record: dict) -> "Health":
    return cls(bool(record.get("healthy", True)), record.get("loss"), record.get("why", ""))


class LossMonitor:
  """Recent healthy losses; `assess` judges one step's loss (and remembers it when it is
  healthy: a diverging stretch never becomes the reference). `anchor`: (median, spread)
  of the best stretch so far, saved with each checkpoint."""

  def __init__(self, losses: Sequence[float] = (), anchor: Optional[Sequence[float]] = None,
               *, chance: Optional[float] = None):
    self.losses = [float(v) for v in losses][-STEPS:]
    self.anchor = tuple(float(v) for v in anchor) if anchor else None
    self.chance = chance

  def _range(self) -> Optional[tuple[float, float]]:
    """(level, noise) of the recent healthy losses: their recent median, and the typical
    step-to-step change / 0.954 (the standard deviation, for Gaussian batch noise)."""
    if len(self.losses) < MIN_STEPS:
      return None
    steps = [abs(b - a) for a, b in zip(self.losses, self.losses[1:])]
    return statistics.median(self.losses[-LEVEL_STEPS:]), statistics.median(steps) / 0.954

  def limit(self) -> Optional[float]:
    current = self._range()
    if current is None:
      return None
    limits = [level + max(4 * noise, 0.25 * abs(level), 0.05)
              for level, noise in filter(None, (current, self.anchor))]
    if self.chance is not None and self.anchor is not None:
      level, noise = self.anchor
      if level < self.chance - 4 * noise:  # it had learnt something: chance is a collapse.
        limits.append((level + self.chance) / 2)
    return min(limits)

  def assess(self, loss: float, *, nonfinite: bool = False) -> Health:
    if nonfinite or not math.isfinite(loss):
      return Health(False, None, "its next step was not finite")
    limit = self.limit()
    if limit is not None and loss > limit:
      return Health(False, loss, f"the next step's loss {loss:.4g} is above its normal range "
                                 f"(at most {limit:.4g}; recent median {self._range()[0]:.4g})")
    self.losses = (self.losses + [loss])[-STEPS:]
    if len(self.losses) >= ANCHOR_STEPS:
      current = self._range()
      if self.anchor is None or current[0] < self.anchor[0]:
        self.anchor = current
    return Health(True, loss)

  def observe(self, history: Sequence[tuple[int, dict]]) -> None:
    """Learns from a window's per-step losses (the non-finite and abnormal ones left out)."""
    for _, values in history:
      self.assess(float(values["train_loss"]), nonfinite=bool(values["nonfinite"]))

