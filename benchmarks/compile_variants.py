"""How the layer ratio reaches the compiled update, and what that does to compile time.

    python benchmarks/compile_variants.py            # BERT-base widths, 12 and 48 layers
    python benchmarks/compile_variants.py --depths 12 --rounds 2

Builds the full jitted step (`tx.update` + `optax.apply_updates`, as run.py) on an
unrolled BERT-base-shaped tree for several ways of applying the per-layer ratio, and
prints trace+lower and compile times (medians of alternated rounds) and the number of
fused computations in the compiled HLO, all and distinct (bodies compared with their
instruction names normalised). The variants go through the explicit seam
`_optimizers.make_tx("adamwdl", ..., scale=variant)` (AdamW's chain, then
`variant(LayerDecay)`; `_variants.py` describes each):

- `adamwdl`: the package as it is (`optax_ldl.adamwdl`): the stored ratios one float
  vector in the state, each read as `s / sign(s)` times a 1-or-NaN factor from one
  comparison with the configured ratios (NaN for a zeroed or foreign state).
- `plain`: the same state, each ratio read from the vector as it is (no guards).
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

import _optimizers  # noqa: E402
import _report  # noqa: E402
import _variants  # noqa: E402
import jax  # noqa: E402
import optax  # noqa: E402


def make_tx(kind: str, sds, n_layers: int):
  """optax.adamw, optax_ldl.adamwdl, or adamwdl with the ratio applied by a variant."""
  if kind in ("adamw", "adamwdl"):
    return _optimizers.make_tx(kind, sds, n_layers, False)
  return _optimizers.make_tx("adamwdl", sds, n_layers, False, scale=_variants.VARIANTS[kind])


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
  ap.add_argument("--variants", nargs="+", default=list(_variants.VARIANTS),
                  choices=list(_variants.VARIANTS), help="variants besides adamwdl (default: all)")
  args = ap.parse_args()
  kinds = ["adamw", "adamwdl", *args.variants]
  print(f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}")
  rows = []
  for depth in args.depths:
    n_layers, sds = _optimizers.sds_tree("bert-base", depth, False)
    times = {k: [] for k in kinds}
    counts = {}
    for r in range(args.rounds + 1):  # round 0: untimed warm-up
      for kind in kinds if r % 2 == 0 else kinds[::-1]:
        tx = make_tx(kind, sds, n_layers)
        state = jax.eval_shape(tx.init, sds)
        t0 = time.perf_counter()
        lowered = _optimizers.jit_step(tx).trace(sds, state, sds).lower()
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
  print(_report.table(["layers", "variant", "fusions", "distinct", "trace+lower s", "compile s",
                       "trace+compile / adamw"], rows))


if __name__ == "__main__":
  main()
