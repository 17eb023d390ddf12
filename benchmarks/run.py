"""Benchmarks for optax_ldl.adamwdl against optax.adamw and peers.

    python benchmarks/run.py            # full (~13-25 min on 2 CPU cores)
    python benchmarks/run.py --quick    # small shapes, smoke test (< 2 min)

Prints the tables and writes benchmarks/RESULTS.md (the "What we tried"
section is kept from benchmarks/NOTES.md). See benchmarks/README.md.

The work is split: _optimizers.py (trees, optimizers, the jitted step),
_steps.py (update-step timing), _inner.py (layerwise(inner) against inner alone),
_compile.py (trace+compile timing), _peers.py (torch and Paddle in processes of
their own), _report.py (RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _compile  # noqa: E402
import _inner  # noqa: E402
import _optimizers  # noqa: E402
import _peers  # noqa: E402
import _report  # noqa: E402
import _steps  # noqa: E402
import _trees  # noqa: E402
import _variants  # noqa: E402
import jax  # noqa: E402
import optax  # noqa: E402


@dataclasses.dataclass
class Plan:
  """What one run measures."""

  step_shapes: list  # (shape, warm-up steps, timed steps per optimizer)
  depths: list
  compile_shape: str
  compile_rounds: int
  bw_bytes: int
  inner: tuple  # (shape, warm-up steps, timed steps per optimizer) of layerwise(inner)
  inners: list  # _inner.INNERS names

  @classmethod
  def of(cls, args) -> Plan:
    if args.quick:
      plan = cls([("bert-mini", 5, 15)], [2, 4, 8], "bert-mini", 2, 64 << 20,
                 ("bert-mini", 10, 60), list(_inner.DEFAULT))
    else:
      plan = cls([("bert-base", 5, 41), ("bert-large", 3, 15)], [12, 48, 96], "bert-base", 5,
                 512 << 20, ("bert-base", 5, 41), list(_inner.DEFAULT))
    if args.shapes is not None:
      plan.step_shapes = [s for s in plan.step_shapes if s[0] in args.shapes]
    if args.depths is not None:
      plan.depths = args.depths
    if args.compile_rounds is not None:
      plan.compile_rounds = args.compile_rounds
    if args.inner is not None:
      plan.inners = args.inner
    return plan


def makers(variants) -> dict:
  """kind -> ``(sds_tree, n_layers, scanned) -> transformation``: adamw, adamwdl, variants."""
  out = {
    "adamw": lambda sds, n, scanned: _optimizers.make_tx("adamw", sds, n, scanned),
    "adamwdl": lambda sds, n, scanned: _optimizers.make_tx("adamwdl", sds, n, scanned),
  }
  for v in variants:
    out[v] = lambda sds, n, scanned, v=v: _optimizers.make_tx(
      "adamwdl", sds, n, scanned, scale=_variants.VARIANTS[v])
  return out


def parse_args(argv=None):
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
  ap.add_argument("--no-peers", action="store_true", help="skip torch and Paddle")
  ap.add_argument(
    "--paddle-python",
    default=os.environ.get("PADDLE_PYTHON"),
    help="interpreter with paddlepaddle installed (default: $PADDLE_PYTHON; "
    "without either the Paddle peer is skipped)",
  )
  ap.add_argument("--shapes", nargs="*", choices=sorted(_trees.SHAPES),
                  help="step-time trees to run (default: the mode's; none: no step timing)")
  ap.add_argument("--depths", type=int, nargs="+", help="compile-time depths (default 12 48 96)")
  ap.add_argument("--compile-rounds", type=int, help="timed compile rounds (default 5)")
  ap.add_argument("--variant", action="append", default=[], choices=sorted(_variants.VARIANTS),
                  help="also time adamwdl with this way of applying the ratio "
                  "(_variants.py; e.g. plain: the state's ratios read without the package's "
                  "guards); repeatable")
  ap.add_argument("--inner", nargs="*", choices=list(_inner.INNERS),
                  help="inner optimizers of the layerwise(inner) vs inner table (default: "
                  f"{' '.join(_inner.DEFAULT)}; none: skip it)")
  ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
  return ap.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  plan = Plan.of(args)
  kind_makers = makers(args.variant)
  kinds = list(kind_makers)
  t_start, load0 = time.time(), os.getloadavg()[0]

  def log(msg):
    print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)

  print(f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}, "
        f"devices {jax.devices()}; kinds {kinds}", flush=True)
  bw = _steps.copy_bandwidth(plan.bw_bytes)
  log(f"copy bandwidth: numpy {bw['numpy_copy'] / 1e9:.1f} GB/s, "
      f"jax {bw['jax_axpb'] / 1e9:.1f} GB/s")

  steps, peers = [], []
  for shape, warmup, reps in plan.step_shapes:
    for scanned in (False, True):
      res = _steps.measure(shape, scanned, kind_makers, warmup, reps)
      log(f"step {res.label}: " + ", ".join(
        f"{k} {_report.fmt_ms(res.median(k))} ms" for k in kinds) + "; ratios " + ", ".join(
        f"{k} {res.ratio(k):.3f}" for k in kinds[1:]))
      if not args.no_peers:
        for p in _peers.measure(res, args.paddle_python):
          peers.append(p)
          log(f"peer {p.peer} {p.label}: " + (p.why_not or f"{_report.fmt_ms(p.peer_s)} ms"))
      res.runners.clear()
      steps.append(res)
      gc.collect()

  inner = []
  shape, warmup, reps = plan.inner
  for name in plan.inners:
    r = _inner.measure(name, shape, warmup, reps)
    inner.append(r)
    log(f"layerwise {r.expr} {r.step.label}: inner {_report.fmt_ms(r.step.median('inner'))} ms, "
        f"layerwise {_report.fmt_ms(r.step.median('layerwise'))} ms; ratio {r.ratio:.3f}")

  comps = []
  for scanned in (False, True):
    for depth in plan.depths:
      c = _compile.compile_times(kind_makers, plan.compile_shape, depth, scanned,
                                 plan.compile_rounds)
      comps.append(c)
      log(f"compile {c.label}: " + ", ".join(f"{k} {c.total(k):.2f}s" for k in kinds)
          + "; ratios " + ", ".join(f"{k} {c.ratio(k):.2f}" for k in kinds[1:]))

  elapsed = time.time() - t_start
  notes = {v: (_variants.__doc__ or "").split(f"``{v}``: ", 1)[-1].split("\n- ", 1)[0]
           .replace("``", "`").replace("\n  ", " ").strip() for v in args.variant}
  md = _report.render(
    command=shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
    quick=args.quick, elapsed=elapsed, load=(load0, os.getloadavg()[0]), kinds=kinds, bw=bw,
    bw_bytes=plan.bw_bytes, steps=steps, comps=comps, peers=peers, variant_notes=notes,
    inner=inner,
  )
  print("\n" + md)
  with open(args.out, "w") as f:
    f.write(md)
  with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
    json.dump(_report.raw(bw, steps, comps, peers, inner), f, default=float)
  print(f"\nwrote {args.out} ({elapsed:.0f}s)")


if __name__ == "__main__":
  main()
