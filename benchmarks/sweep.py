"""K = 8 (decay, lr) settings as one vmapped program against 8 separate runs, on the demo's model.

    python benchmarks/sweep.py                 # K = 8, 100 steps of batch 16 (~1-3 min on 2 cores)
    python benchmarks/sweep.py --steps 20      # quicker

The model is ``optax_ldl.demo.Model`` (4 pre-norm blocks of width 64, the demo's defaults)
fine-tuned on the demo's target task from its initialisation (what is timed is the step, not
what the model learnt). Three ways to train the 8 settings, each timed as compile (trace,
lower, compile) and run (the steps, after compiling, until the params are ready):

- ``sweep``: ``optax.inject_hyperparams(adamwdl)``, ``sweep_init`` and one
  ``jit(vmap(step))``: one compile, one program running the 8 settings side by side;
- ``separate``: 8 ``adamwdl(lr, layerwise_decay=d)`` built with numbers: 8 compiles, 8 runs;
- ``separate, injected``: the injected optimizer and one compiled step, run 8 times
  (the settings written into the state): one compile, 8 runs one after the other.

Prints a markdown table (and the command, the machine); the numbers are not in RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_ldl
from optax_ldl import demo
from optax_ldl._src.sweep import grid, sweep_init

STATIC = ("n_layers", "apply_decay_param_fun")


def _setup(batch: int, steps: int):
  model = demo.Model()
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, demo.SEQ_LEN), jnp.int32))
  x, y = demo.target_data(batch * steps, seed=100)
  data = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps)]

  def loss_fn(p, xb, yb):
    return demo._loss(model.apply({"params": p}, xb)[1], yb)[0]

  return params["params"], data, loss_fn


def _step(tx, loss_fn):
  def step(p, s, xb, yb):
    loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss
  return step


def _compile(fn, *args):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _run(compiled, p, s, data):
  start = time.perf_counter()
  for xb, yb in data:
    p, s, _ = compiled(p, s, xb, yb)
  jax.block_until_ready(p)
  return p, time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python benchmarks/sweep.py",
                                   description=(__doc__ or "").splitlines()[0])
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--batch", type=int, default=16)
  args = parser.parse_args(argv)
  params, data, loss_fn = _setup(args.batch, args.steps)
  values = grid(layerwise_decay=[1.0, 0.9, 0.75, 0.6], learning_rate=[3e-4, 1e-3])
  k = len(values["learning_rate"])
  common: dict[str, Any] = dict(n_layers=4, weight_decay=0.01,
                apply_decay_param_fun=demo.apply_weight_decay)
  injected = optax.inject_hyperparams(optax_ldl.adamwdl, static_args=STATIC)(
      learning_rate=1e-3, layerwise_decay=1.0, **common)
  rows = {}

  # sweep: one program.
  params_k, state_k = sweep_init(injected, params, **values)
  step = jax.vmap(_step(injected, loss_fn), in_axes=(0, 0, None, None))
  compiled, t_compile = _compile(step, params_k, state_k, *data[0])
  swept, t_run = _run(compiled, params_k, state_k, data)
  rows["sweep (one vmapped program)"] = (t_compile, t_run)

  # separate: 8 optimizers built with numbers, 8 compiles.
  t_compile = t_run = 0.0
  separate = []
  for decay, lr in zip(values["layerwise_decay"], values["learning_rate"]):
    tx = optax_ldl.adamwdl(float(lr), layerwise_decay=float(decay), **common)
    state = tx.init(params)
    compiled, tc = _compile(_step(tx, loss_fn), params, state, *data[0])
    p, tr = _run(compiled, params, state, data)
    separate.append(p)
    t_compile, t_run = t_compile + tc, t_run + tr
  rows[f"separate ({k} optimizers, {k} compiles)"] = (t_compile, t_run)

  # separate, injected: one compile, 8 runs one after the other.
  state = injected.init(params)
  compiled, t_compile = _compile(_step(injected, loss_fn), params, state, *data[0])
  t_run = 0.0
  for decay, lr in zip(values["layerwise_decay"], values["learning_rate"]):
    s = optax.tree_utils.tree_set(state, layerwise_decay=jnp.float32(decay),
                                  learning_rate=jnp.float32(lr))
    _, tr = _run(compiled, params, s, data)
    t_run += tr
  rows[f"separate, injected (1 compile, {k} runs)"] = (t_compile, t_run)

  # The sweep's params against the separate runs': the largest difference, and where. (Adam
  # turns rounding noise in a gradient that is 0 in exact arithmetic, such as attention's key
  # bias, into steps of size lr, so those leaves differ by O(lr); the others by rounding.)
  diffs = sorted(
      (float(np.max(np.abs(np.asarray(a[i]) - np.asarray(b)))), jax.tree_util.keystr(path))
      for i, p in enumerate(separate)
      for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(swept)[0],
                              jax.tree.leaves(p), strict=True))
  worst = diffs[-1]
  other = max((d for d in diffs if "key" not in d[1] or "bias" not in d[1]), default=(0.0, ""))
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  print(f"`python benchmarks/sweep.py --steps {args.steps} --batch {args.batch}`: K = {k} "
        f"settings (decay x lr), demo model (4 layers, width 64), {args.steps} steps of batch "
        f"{args.batch}; {cores} CPU cores ({platform.machine()}, jax {jax.__version__}, "
        f"{jax.default_backend()}), load average {load:.1f} at the end\n")
  print("| way | compile (s) | run (s) | total (s) |\n|---|---|---|---|")
  for name, (tc, tr) in rows.items():
    print(f"| {name} | {tc:.2f} | {tr:.2f} | {tc + tr:.2f} |")
  base = sum(rows[f"separate ({k} optimizers, {k} compiles)"])
  print(f"\nspeed-up of the sweep over separate runs (total): "
        f"{base / sum(rows['sweep (one vmapped program)']):.1f}x; largest |sweep - separate|: "
        f"{worst[0]:.2e} ({worst[1]}); outside the attention key biases: {other[0]:.2e} "
        f"({other[1]})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
