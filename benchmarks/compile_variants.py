"""How the layer ratio reaches the compiled update, and what that does to compile time.

    python benchmarks/compile_variants.py            # BERT-base widths, 12 and 48 layers
    python benchmarks/compile_variants.py --depths 12 --rounds 2

Builds the full jitted step (`tx.update` + `optax.apply_updates`, as run.py) on an
unrolled BERT-base-shaped tree for several ways of applying the per-layer ratio, and
prints trace+lower and compile times (medians of alternated rounds) and the number of
fused computations in the compiled HLO, all and distinct (bodies compared with their
instruction names normalised). The variants (`scale_by_layer_ratio` replaced in
`adamwdl`'s chain; everything else is the same):

- `adamwdl`: the package as it is: each group's ratio a float scalar in the state.
- `literal`: `optax.partition({label: optax.scale(ratio)}, labels)`: ratios as constants.
- `barrier`: as `literal`, the ratios passed through `jax.lax.optimization_barrier`.
- `cond`: no state; each ratio the output of a `lax.cond` with identical branches on a
  runtime predicate (an element of the updates), so that it is not a constant.

`optax.adamw` (same mask) is the reference. The "What we tried" section of NOTES.md
cites this script.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import run  # noqa: E402

from optax_ldl._src import adamwdl as adamwdl_lib  # noqa: E402
from optax_ldl._src import layer_rules  # noqa: E402
from optax_ldl._src import stacked as stacked_lib  # noqa: E402

PACKAGE = adamwdl_lib.scale_by_layer_ratio


def _partitioned(scale_fn):
  """A scale_by_layer_ratio that applies scale_fn(ratio) per label with optax.partition."""

  def make(*, layerwise_decay, n_layers, set_param_lr_fun=None, name_dict=None, stacked="auto"):
    def partition(tree):
      groups = layer_rules.layer_groups(
          tree, layerwise_decay=layerwise_decay, n_layers=n_layers,
          set_param_lr_fun=set_param_lr_fun, name_dict=name_dict, stacked=stacked)
      transforms = {label: scale_fn(r) for label, r in groups.ratios.items()}
      return optax.partition(transforms, groups.labels)

    return optax.GradientTransformationExtraArgs(
        lambda params: partition(params).init(params),
        lambda updates, state, params=None, **kw: partition(updates).update(
            updates, state, params, **kw))

  return make


def _stateless(ratio_of):
  """An optax.scale-like transformation whose ratio is ratio_of(ratio, updates)."""

  def scale_fn(ratio):
    def update(updates, state, params=None):
      del params
      r = ratio_of(ratio, updates)
      return jax.tree.map(lambda u: stacked_lib.times_ratio(u, r), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)

  return scale_fn


def _barrier(ratio, updates):
  del updates
  return jax.lax.optimization_barrier(jnp.float32(ratio))


def _cond(ratio, updates):
  x = jax.tree.leaves(updates)[0].reshape(-1)[0]
  constant = lambda: jnp.float32(ratio)  # noqa: E731
  return jax.lax.cond(x == x, constant, constant)


VARIANTS = {
    "adamwdl": PACKAGE,
    "literal": _partitioned(optax.scale),
    "barrier": _partitioned(_stateless(_barrier)),
    "cond": _partitioned(_stateless(_cond)),
}


def make_tx(kind, sds, n_layers):
  if kind == "adamw":
    return run.make_tx("adamw", sds, n_layers, False)
  adamwdl_lib.scale_by_layer_ratio = VARIANTS[kind]
  try:
    return run.make_tx("adamwdl", sds, n_layers, False)
  finally:
    adamwdl_lib.scale_by_layer_ratio = PACKAGE


def fusions(hlo_text: str) -> tuple[int, int]:
  """(all, distinct) fused computations; bodies compared with names normalised."""
  bodies = re.findall(r"\n(%?fused_computation[^\n]*\{.*?\n\})", hlo_text, flags=re.S)
  distinct = {re.sub(r"[\w.]*\.\d+", "x", body.split("\n", 1)[1]) for body in bodies}
  return len(bodies), len(distinct)


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--depths", type=int, nargs="+", default=[12, 48])
  ap.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up")
  args = ap.parse_args()
  kinds = ["adamw", *VARIANTS]
  print(f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}")
  rows = []
  for depth in args.depths:
    n_layers, sds = run.sds_tree("bert-base", depth, False)
    times = {k: [] for k in kinds}
    counts = {}
    for r in range(args.rounds + 1):  # round 0: untimed warm-up
      for kind in kinds if r % 2 == 0 else kinds[::-1]:
        tx = make_tx(kind, sds, n_layers)
        state = jax.eval_shape(tx.init, sds)
        t0 = time.perf_counter()
        lowered = run.jit_step(tx).trace(sds, state, sds).lower()
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        if r:
          times[kind].append((t1 - t0, t2 - t1))
        else:
          counts[kind] = fusions(compiled.as_text())
    base = sum(statistics.median(t[i] for t in times["adamw"]) for i in (0, 1))
    for kind in kinds:
      trace = statistics.median(t[0] for t in times[kind])
      comp = statistics.median(t[1] for t in times[kind])
      rows.append([f"x{depth}", kind, *counts[kind], f"{trace:.2f}", f"{comp:.2f}",
                   f"{(trace + comp) / base:.2f}"])
      print(" | ".join(str(c) for c in rows[-1]), flush=True)
  print()
  print(run.table(["layers", "variant", "fusions", "distinct", "trace+lower s", "compile s",
                   "trace+compile / adamw"], rows))


if __name__ == "__main__":
  main()
