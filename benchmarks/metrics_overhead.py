"""Step time with ``layer_metrics`` on and off, on a BERT-shaped tree.

Run: ``python benchmarks/metrics_overhead.py`` (BERT-base, unrolled and scanned;
``--shapes bert-mini`` for a quick run). Each variant is the optimizer part of a
training step, jitted with params and state donated: ``adamwdl``'s update, the
update applied, and (on) the per-layer metrics of the step returned with it. The
two variants run alternately (order reversed every round), after a warmup; the
table gives the medians and the overhead. Off, the step is exactly the step
without metrics: nothing of them is traced.
"""

from __future__ import annotations

import argparse
import statistics
import time

import _optimizers
import _steps
import jax
import optax

import optax_ldl
from optax_ldl._src.layer_metrics import layer_metrics


def step_fn(tx, layers, metrics: bool):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    out = layer_metrics(params, updates, grads, layers) if metrics else {}
    return optax.apply_updates(params, updates), state, out
  return jax.jit(step, donate_argnums=(0, 1))


class Runner:
  """One variant's params, state and fixed grads; calling it runs one donated step."""

  def __init__(self, tx, layers, metrics, params, grads):
    self.step = step_fn(tx, layers, metrics)
    self.params = jax.tree.map(lambda x: x.copy(), params)
    self.state = jax.jit(tx.init)(self.params)
    self.grads = grads
    t0 = time.perf_counter()
    self.step = self.step.lower(self.params, self.state, grads).compile()
    self.compile_s = time.perf_counter() - t0
    self.n_metrics = 0

  def __call__(self):
    self.params, self.state, out = self.step(self.params, self.state, self.grads)
    jax.block_until_ready((self.params, out))
    self.n_metrics = len(out)


def measure(shape: str, scanned: bool, warmup: int, repeats: int) -> list[str]:
  n_layers, sds = _optimizers.sds_tree(shape, None, scanned)
  params = _optimizers.real_tree(sds, 0, 0.02)
  grads = _optimizers.real_tree(sds, 1, 1e-3)
  stacked = {"bert/encoder/layer": 0} if scanned else "auto"
  layers = optax_ldl.path_layers(sds, stacked=stacked)
  tx = optax_ldl.adamwdl(1e-4, layerwise_decay=0.8, layers=layers,
                         mask=_optimizers.mask_of)
  runners = {"off": Runner(tx, layers, False, params, grads),
             "on": Runner(tx, layers, True, params, grads)}
  times = _steps.bench_steps(runners, warmup, repeats)
  off, on = (statistics.median(times[k]) for k in ("off", "on"))
  label = f"{shape} {'scanned' if scanned else 'unrolled'}"
  return [f"| {label} | {len(jax.tree.leaves(sds))} | {runners['on'].n_metrics} | "
          f"{off * 1e3:.1f} | {on * 1e3:.1f} | {100 * (on / off - 1):+.1f}% | "
          f"{runners['off'].compile_s:.2f} / {runners['on'].compile_s:.2f} |"]


def main() -> None:
  parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
  parser.add_argument("--shapes", nargs="+", default=["bert-base"])
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  print(f"{jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}; "
        f"medians of {args.repeats} alternated steps after {args.warmup} warmup steps")
  print("| tree | leaves | metrics | step off (ms) | step on (ms) | overhead "
        "| compile off / on (s) |")
  print("|---|---|---|---|---|---|---|")
  for shape in args.shapes:
    for scanned in (False, True):
      for line in measure(shape, scanned, args.warmup, args.repeats):
        print(line, flush=True)


if __name__ == "__main__":
  main()
