"""Trace+lower and compile timing of the full jitted update, alternated between optimizers."""

from __future__ import annotations

import dataclasses
import statistics
import time

import _optimizers
import jax


@dataclasses.dataclass
class CompileResult:
  """Trace+lower and compile times (seconds) of each optimizer on one tree."""

  label: str
  n_leaves: int
  times: dict[str, dict[str, list[float]]]  # kind -> {"trace": [...], "compile": [...]}

  def median(self, kind: str, phase: str) -> float:
    return statistics.median(self.times[kind][phase])

  def total(self, kind: str) -> float:
    return self.median(kind, "trace") + self.median(kind, "compile")

  def ratio(self, kind: str, base: str = "adamw") -> float:
    return self.total(kind) / self.total(base)


def compile_times(makers: dict, shape: str, depth: int, scanned: bool, repeats: int):
  """One untimed round, then ``repeats`` alternated rounds (order reversed every round).

  Every round builds a fresh optimizer (a fresh closure: no jit cache hit).
  ``makers``: kind -> ``(sds_tree, n_layers, scanned) -> transformation``.
  """
  n_lay, sds = _optimizers.sds_tree(shape, depth, scanned)
  kinds = list(makers)
  out = {k: {"trace": [], "compile": []} for k in kinds}
  for r in range(repeats + 1):
    for k in kinds if r % 2 == 0 else kinds[::-1]:
      tx = makers[k](sds, n_lay, scanned)
      st = jax.eval_shape(tx.init, sds)
      t0 = time.perf_counter()
      lowered = _optimizers.jit_step(tx).trace(sds, st, sds).lower()
      t1 = time.perf_counter()
      lowered.compile()
      t2 = time.perf_counter()
      if r:
        out[k]["trace"].append(t1 - t0)
        out[k]["compile"].append(t2 - t1)
  label = f"{shape} x{depth} {'scanned' if scanned else 'unrolled'}"
  return CompileResult(label, len(jax.tree.leaves(sds)), out)
