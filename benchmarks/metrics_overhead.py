"""Step time with per-layer metrics on and off, on a BERT-shaped tree.

Run: ``python benchmarks/metrics_overhead.py`` (BERT-base, unrolled and scanned;
``--shapes bert-mini`` for a quick run). Each variant is the optimizer part of a
training step, jitted with params and state donated: ``adamwdl``'s update and the
update applied, plus

- ``off``: nothing else (nothing of the metrics is traced);
- ``in step``: ``layer_metrics`` of the update, returned with it on every step;
- ``tracked, other step``: ``track_layer_metrics(every=N)`` on a step that does not
  measure (the state's count is not a multiple of N);
- ``tracked, logging step``: the same program on a step that measures.

The variants run alternately (order reversed every round), after a warmup, in two
rounds: ``off`` with the other step, then ``off`` with the two heavy variants (a step
timed right after a heavy one runs slower, which would charge the light variant for its
neighbour). The table gives the medians and each one's ratio to the ``off`` of its round.
The two tracked rows are the same program: the runner of the "other step" keeps its
count off the multiples of N, the logging one keeps it on them (N = 1000, the counts are
set in the state before every step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import _optimizers
import _steps
import jax
import jax.numpy as jnp
import optax

import optax_ldl
from optax_ldl._src.layer_metrics import layer_metrics

EVERY = 1000


def step_fn(tx, layers, metrics: bool):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    out = layer_metrics(params, updates, grads, layers) if metrics else {}
    return optax.apply_updates(params, updates), state, out
  return jax.jit(step, donate_argnums=(0, 1))


class Runner:
  """One variant's params, state and fixed grads; calling it runs one donated step.

  ``count``: for a tracked optimizer, the wrapper's count is set to this before every
  step (so that the step measures, or does not, every time).
  """

  def __init__(self, tx, layers, metrics, params, grads, count=None):
    self.step = step_fn(tx, layers, metrics)
    self.params = jax.tree.map(lambda x: x.copy(), params)
    self.state = jax.jit(tx.init)(self.params)
    self.grads = grads
    self.count = count
    t0 = time.perf_counter()
    self.step = self.step.lower(self.params, self.state, grads).compile()
    self.compile_s = time.perf_counter() - t0
    self.n_metrics = 0

  def __call__(self):
    if self.count is not None:
      self.state = self.state._replace(count=jnp.asarray(self.count, jnp.int32))
    self.params, self.state, out = self.step(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, out))
    if self.count is not None:
      out = self.state.layer_metrics
    self.n_metrics = len(out)


def measure(shape: str, scanned: bool, warmup: int, repeats: int) -> list[str]:
  n_layers, sds = _optimizers.sds_tree(shape, None, scanned)
  params = _optimizers.real_tree(sds, 0, 0.02)
  grads = _optimizers.real_tree(sds, 1, 1e-3)
  stacked = {"bert/encoder/layer": 0} if scanned else "auto"
  layers = optax_ldl.path_layers(sds, stacked=stacked)
  tx = optax_ldl.adamwdl(1e-4, layerwise_decay=0.8, layers=layers,
                         mask=_optimizers.mask_of)
  tracked = optax_ldl.track_layer_metrics(tx, layers, every=EVERY)
  runners = {"off": Runner(tx, layers, False, params, grads),
             "in step": Runner(tx, layers, True, params, grads),
             "tracked, other step": Runner(tracked, layers, False, params, grads, EVERY + 1),
             "tracked, logging step": Runner(tracked, layers, False, params, grads, EVERY)}
  label = f"{shape} {'scanned' if scanned else 'unrolled'}"
  lines = []
  # Two rounds, each against its own "off": a step timed right after a heavy one (several
  # times the step, its temporaries freed) runs slower, so the light variant is alternated
  # with "off" alone.
  for names in (("off", "tracked, other step"), ("off", "in step", "tracked, logging step")):
    times = _steps.bench_steps({n: runners[n] for n in names}, warmup, repeats)
    off = statistics.median(times["off"])
    lines += [f"| {label} | {name} | {runners[name].n_metrics} | "
              f"{statistics.median(times[name]) * 1e3:.1f} | "
              f"{statistics.median(times[name]) / off:.3f} | {runners[name].compile_s:.2f} |"
              for name in names]
  return lines


def main() -> None:
  parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
  parser.add_argument("--shapes", nargs="+", default=["bert-base"])
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  print(f"{jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}; "
        f"medians of {args.repeats} alternated steps after {args.warmup} warmup steps")
  print("| tree | variant | metrics | step (ms) | step / off | compile (s) |")
  print("|---|---|---|---|---|---|")
  for shape in args.shapes:
    for scanned in (False, True):
      for line in measure(shape, scanned, args.warmup, args.repeats):
        print(line, flush=True)


if __name__ == "__main__":
  main()
