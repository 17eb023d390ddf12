"""Layer schedules: the state a frozen bottom half saves, and what a schedule costs a step.

    python benchmarks/frozen_state.py                     # BERT-base, unrolled (a few minutes)
    python benchmarks/frozen_state.py --shape bert-mini   # a smoke test, seconds

On a BERT-shaped tree (HF-Flax paths, ``_trees.py``), ``optax_ldl.adamwdl`` (decay 0.8,
weight decay off biases and LayerNorm, as ``run.py``) in five forms:

- ``fixed``: the fixed ratios, no layer schedule (the reference), and ``fixed, again``: the
  same optimizer a second time, a control that shows how far two equal steps' medians fall
  apart on this machine;
- ``frozen, no state``: the embeddings and layers ``0 .. L/2 - 1`` frozen for good with
  ``freeze(..., keep_state=False)``: the inner AdamW runs under ``optax.masked`` and keeps no
  moments for them;
- ``frozen, state kept``: the same places frozen with ``keep_state=True`` (the default);
- ``gradual unfreezing``: ``gradual_unfreezing(100)``, and ``backbone ramp``:
  ``backbone_ramp(1000, delay=100)`` (each layer's ratio times a function of the step).

Each is one jitted step (the optimizer's update and ``optax.apply_updates``, params and
state donated) on the same real arrays, run alternately in one process (the order reversed
every round, ``_steps.bench_steps``); the medians are reported with the state bytes (from
``jax.eval_shape`` of ``init``). Targets (issue 17): the frozen bottom half's state about
half the unfrozen one's, and a schedule's step at most 1.03x the fixed-ratio step.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import _optimizers
import _steps
import _trees
import jax
import numpy as np

import optax_ldl


def bottom_half(depth: int):
  """The places of the bottom half: the embeddings and layers ``0 .. depth / 2 - 1``."""
  return lambda p: p.kind == "embedding" or (p.kind == "layer" and p.layer < depth // 2)


def optimizers(tree, depth: int) -> dict:
  """name -> the adamwdl of that name (module docstring)."""
  decay = _optimizers.layer_decay(depth, scanned=False)
  mask = _optimizers.mask_of(tree)

  def tx(schedule=None):
    return optax_ldl.adamwdl(_optimizers.LR, weight_decay=_optimizers.WD, mask=mask,
                             layerwise_decay=decay.layerwise_decay, n_layers=depth,
                             layer_schedule=schedule)

  return {
      "fixed": tx(),
      "fixed, again": tx(),  # the same program twice: the spread of the timings.
      "frozen, no state": tx(optax_ldl.freeze(bottom_half(depth), keep_state=False)),
      "frozen, state kept": tx(optax_ldl.freeze(bottom_half(depth))),
      "gradual unfreezing": tx(optax_ldl.gradual_unfreezing(100)),
      "backbone ramp": tx(optax_ldl.backbone_ramp(1000, delay=100)),
  }


def frozen_params(tree, depth: int) -> int:
  """The number of parameters in the frozen bottom half (read from the layer plan)."""
  plan = optax_ldl.LayerDecay(layerwise_decay=_trees.LAYERWISE_DECAY, n_layers=depth).plan(tree)
  chosen = bottom_half(depth)
  return sum(int(np.prod(x.shape)) for p, x in jax.tree_util.tree_leaves_with_path(tree)
             if chosen(plan.placements[_optimizers.path_name(p)]))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="bert-base", choices=sorted(_trees.SHAPES))
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each (>= 1)")
  parser.add_argument("--repeats", type=int, default=30, help="timed steps of each (>= 1)")
  args = parser.parse_args(argv)
  if args.warmup < 1 or args.repeats < 1:
    parser.error(f"--warmup and --repeats must be >= 1, got {args.warmup}, {args.repeats}")

  start = time.perf_counter()
  depth, sds = _optimizers.sds_tree(args.shape)
  txs = optimizers(sds, depth)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(sds))
  n_frozen = frozen_params(sds, depth)
  state = {k: _optimizers.state_bytes(tx, sds) for k, tx in txs.items()}
  params = _optimizers.real_tree(sds, 0, 0.02)
  grads = _optimizers.real_tree(sds, 1, 1e-3)
  runners = {k: _steps.JaxRunner(tx, params, grads) for k, tx in txs.items()}
  del params
  times = _steps.bench_steps(runners, args.warmup, args.repeats)
  median = {k: statistics.median(v) for k, v in times.items()}

  print(f"python benchmarks/frozen_state.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        .rstrip())
  print(f"{args.shape} unrolled: {depth} layers, {n_params / 1e6:.1f} M parameters, bottom half "
        f"(embeddings + layers 0..{depth // 2 - 1}) {n_frozen / 1e6:.1f} M "
        f"({n_frozen / n_params:.0%}); jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cores ({platform.machine()}); {args.warmup} warmup + "
        f"{args.repeats} timed steps each, alternated; medians\n")
  rows = [[k, f"{state[k] / 2**20:.1f}", f"{state[k] / state['fixed']:.3f}",
           f"{median[k] * 1e3:.1f}", f"{median[k] / median['fixed']:.3f}",
           f"{min(times[k]) * 1e3:.1f}"] for k in txs]
  header = ["optimizer", "state MiB", "state / fixed", "step ms (median)", "step / fixed",
            "step ms (min)"]
  widths = [max(len(x) for x in col) for col in zip(header, *rows)]
  for cells in [header, ["-" * w for w in widths], *rows]:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(cells, widths))))
  worst = max(median[k] / median["fixed"] for k in ("gradual unfreezing", "backbone ramp"))
  print(f"\nstate of the frozen bottom half, no state kept: "
        f"{state['frozen, no state'] / state['fixed']:.3f} of the unfrozen model's "
        f"(target: about {1 - n_frozen / n_params:.2f}, the trained share of the parameters)")
  print(f"a schedule's step: at most {worst:.3f}x the fixed-ratio step (target <= 1.03)")
  print(f"({time.perf_counter() - start:.0f} s)")
  return {"state_bytes": state, "median_s": median, "times_s": times,
          "n_params": n_params, "n_frozen": n_frozen}


if __name__ == "__main__":
  main()
