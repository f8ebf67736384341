"""Is the run healthy? The training loss's normal range, learnt from recent steps, judges
each checkpoint: the state saved at step s is what step s+1 computes its loss with, so
that loss is its verdict. One whose loss is not finite, or above the normal range, is
*suspect*; after a divergence the run resumes (or rolls back) to the newest healthy one.

The range is robust to batch noise and to the divergence itself: the median of the last
`STEPS` healthy steps' losses plus the larger of 6 median absolute deviations, a quarter
of the median and 0.05. With fewer than `MIN_STEPS` losses seen, any finite loss is
healthy. The range never drifts up with a slowly collapsing run: once `ANCHOR_STEPS`
losses are known, the lowest median seen (and the spread measured then) is the anchor,
and a loss above the anchor's range is suspect however many steps it took to get there
(a run that collapses to chance loss step by step stays suspect).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Optional, Sequence

STEPS = 200
MIN_STEPS = 8
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

  def __init__(self, losses: Sequence[float] = (), anchor: Optional[Sequence[float]] = None):
    self.losses = [float(v) for v in losses][-STEPS:]
    self.anchor = tuple(float(v) for v in anchor) if anchor else None

  def _range(self) -> Optional[tuple[float, float]]:
    """(median, spread) of the recent healthy losses."""
    if len(self.losses) < MIN_STEPS:
      return None
    median = statistics.median(self.losses)
    return median, statistics.median(abs(v - median) for v in self.losses)

  def limit(self) -> Optional[float]:
    current = self._range()
    if current is None:
      return None
    return min(median + max(6 * spread, 0.25 * abs(median), 0.05)
               for median, spread in filter(None, (current, self.anchor)))

  def assess(self, loss: float, *, nonfinite: bool = False) -> Health:
    if nonfinite or not math.isfinite(loss):
      return Health(False, None, "its next step was not finite")
    limit = self.limit()
    if limit is not None and loss > limit:
      return Health(False, loss, f"the next step's loss {loss:.4g} is above its normal range "
                                 f"(at most {limit:.4g}; median {statistics.median(self.losses):.4g})")
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
