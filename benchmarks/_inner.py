"""``optax_ldl.layerwise(inner)`` against ``inner`` alone: the step time of other optimizers.

Each pair runs on the unrolled BERT tree of the mode (BERT-base; BERT-mini with
``--quick``) with ``_steps.measure``: the same jitted step as the main table (params and
state donated), real arrays, the two optimizers alternated in one process, medians. The
inner optimizers are used as written below (no weight-decay mask: the comparison is of
the layer ratio's cost, not of the optimizers).
"""

from __future__ import annotations

import dataclasses
import gc

import _steps
import _trees
import optax

import optax_ldl

# name -> (the expression shown in the report, a builder of the inner optimizer).
INNERS = {
  "adamw": ("optax.adamw(1e-3)", lambda: optax.adamw(1e-3)),
  "lion": ("optax.lion(1e-4)", lambda: optax.lion(1e-4)),
  "adafactor": ("optax.adafactor(1e-3)", lambda: optax.adafactor(1e-3)),
  "sgd-momentum": ("optax.sgd(1e-2, momentum=0.9)", lambda: optax.sgd(1e-2, momentum=0.9)),
  "sgd": ("optax.sgd(1e-2)", lambda: optax.sgd(1e-2)),  # only with --inner sgd
}
DEFAULT = ["adamw", "lion", "adafactor", "sgd-momentum"]  # the ones issue 15 asks for


@dataclasses.dataclass
class InnerResult:
  """One inner optimizer: its step timing (kinds ``inner`` and ``layerwise``)."""

  name: str
  expr: str
  step: _steps.StepResult

  @property
  def ratio(self) -> float:
    return self.step.ratio("layerwise", base="inner")

  @property
  def extra_state_bytes(self) -> int:
    return self.step.state_bytes["layerwise"] - self.step.state_bytes["inner"]


def makers(name: str) -> dict:
  """``inner`` and ``layerwise`` makers for ``_steps.measure`` (a fresh inner each)."""
  build = INNERS[name][1]
  return {
    "inner": lambda sds, n, scanned: build(),
    "layerwise": lambda sds, n, scanned: optax_ldl.layerwise(
      build(), layerwise_decay=_trees.LAYERWISE_DECAY),
  }


def measure(name: str, shape: str, warmup: int, repeats: int) -> InnerResult:
  """Times ``layerwise(inner)`` against ``inner`` on the unrolled ``shape`` tree."""
  step = _steps.measure(shape, False, makers(name), warmup, repeats)
  step.runners.clear()
  gc.collect()
  return InnerResult(name, INNERS[name][0], step)
