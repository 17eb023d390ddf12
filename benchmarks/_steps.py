"""Update-step timing: each optimizer's jitted step on real arrays, alternated in one process."""

from __future__ import annotations

import dataclasses
import statistics
import time

import _optimizers
import _trees
import jax
import jax.numpy as jnp


def bench_steps(runners: dict, warmup: int, repeats: int) -> dict:
  """``runners``: name -> callable doing one full step and blocking.

  After ``warmup`` steps of each, runs them alternately (order reversed every
  round); returns name -> the list of timed step times (seconds).
  """
  for _ in range(warmup):
    for f in runners.values():
      f()
  times = {k: [] for k in runners}
  names = list(runners)
  for r in range(repeats):
    order = names if r % 2 == 0 else names[::-1]
    for k in order:
      t0 = time.perf_counter()
      runners[k]()
      times[k].append(time.perf_counter() - t0)
  return times


class JaxRunner:
  """One optimizer's params, state and fixed grads; calling it runs one donated step."""

  def __init__(self, tx, params, grads):
    self.step = _optimizers.jit_step(tx)
    self.params = jax.tree.map(jnp.copy, params)
    self.state = jax.jit(tx.init)(self.params)
    self.grads = grads
    jax.block_until_ready((self.params, self.state))

  def __call__(self):
    self.params, self.state = self.step(self.params, self.state, self.grads)
    jax.block_until_ready(self.params)


@dataclasses.dataclass
class StepResult:
  """The step timings of one tree (``kinds[0]`` is the reference, optax.adamw)."""

  label: str
  shape: str
  n_params: int
  n_leaves: int
  depth: int
  scanned: bool
  warmup: int
  repeats: int
  state_bytes: dict[str, int]
  times: dict[str, list[float]]
  runners: dict[str, JaxRunner] = dataclasses.field(default_factory=dict, repr=False)

  def median(self, kind: str) -> float:
    return statistics.median(self.times[kind])

  def ratio(self, kind: str, base: str = "adamw") -> float:
    return self.median(kind) / self.median(base)


def measure(shape: str, scanned: bool, makers: dict, warmup: int, repeats: int) -> StepResult:
  """Times one step of each optimizer on ``shape`` (unrolled or scanned).

  ``makers``: kind -> ``(sds_tree, n_layers, scanned) -> transformation``. The runners
  are kept on the result (for the peers); drop them with ``result.runners.clear()``.
  """
  label = f"{shape} {'scanned' if scanned else 'unrolled'}"
  n_lay, sds = _optimizers.sds_tree(shape, None, scanned)
  _, h, i = _trees.SHAPES[shape]
  txs = {k: make(sds, n_lay, scanned) for k, make in makers.items()}
  params = _optimizers.real_tree(sds, 0, 0.02)
  grads = _optimizers.real_tree(sds, 1, 1e-3)
  runners = {k: JaxRunner(tx, params, grads) for k, tx in txs.items()}
  del params
  return StepResult(
    label=label,
    shape=shape,
    n_params=_trees.n_params(_trees.flat_shapes(n_lay, h, i, scanned)),
    n_leaves=len(jax.tree.leaves(sds)),
    depth=n_lay,
    scanned=scanned,
    warmup=warmup,
    repeats=repeats,
    state_bytes={k: _optimizers.state_bytes(tx, sds) for k, tx in txs.items()},
    times=bench_steps(runners, warmup, repeats),
    runners=runners,
  )


def copy_bandwidth(n_bytes: int, repeats: int = 5) -> dict:
  """Read+write bytes / time of a numpy copy and of a donated jitted ``x * a + b``."""
  import numpy as np

  n = n_bytes // 4
  a = np.ones(n, np.float32)
  b = np.empty_like(a)
  ts = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    np.copyto(b, a)
    ts.append(time.perf_counter() - t0)
  np_bw = 2 * n * 4 / min(ts[1:])
  del a, b
  x = jnp.ones(n, jnp.float32)
  f = jax.jit(lambda x: x * 1.0001 + 1e-7, donate_argnums=0)
  x = jax.block_until_ready(f(x))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    x = jax.block_until_ready(f(x))
    ts.append(time.perf_counter() - t0)
  jax_bw = 2 * n * 4 / min(ts)
  del x
  return {"numpy_copy": np_bw, "jax_axpb": jax_bw, "best": max(np_bw, jax_bw)}
