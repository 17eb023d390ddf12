"""RESULTS.md: the tables and targets of one run of ``run.py``."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence

import _compile
import _inner
import _optimizers
import _peers
import _steps
import _trees
import jax
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
STEP_TARGET, COMPILE_TARGET = 1.03, 1.25


def fmt_ms(s: float) -> str:
  return f"{s * 1e3:.1f}"


def fmt_s(s: float) -> str:
  return f"{s:.2f}"


def table(header, rows) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(out)


def machine() -> str:
  """lscpu's model, cores, caches and SIMD flags; memory; platform."""
  lines = []
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    keep = ("Model name", "CPU(s):", "Thread(s) per core", "L2 cache", "L3 cache", "Flags")
    for ln in lscpu.splitlines():
      if ln.startswith(keep):
        if ln.startswith("Flags"):
          fl = ln.split(":", 1)[1].split()
          ln = "Flags (SIMD): " + " ".join(x for x in fl if x.startswith(("avx", "fma", "sse4")))
        lines.append(" ".join(ln.split()))
  except Exception:  # noqa: BLE001
    pass
  mem = ""
  try:
    with open("/proc/meminfo") as f:
      mem = f.readline().split(":")[1].strip()
  except OSError:
    pass
  return "\n".join(
    [f"- nproc: {os.cpu_count()}; MemTotal {mem}; {platform.platform()}; "
     f"Python {platform.python_version()}"]
    + [f"- {x}" for x in lines]
  )


def _kind_name(kind: str) -> str:
  return {"adamw": "optax.adamw", "adamwdl": "adamwdl"}.get(kind, f"adamwdl[{kind}]")


def targets(kinds, steps: list[_steps.StepResult], comps: list[_compile.CompileResult],
            inner: Sequence[_inner.InnerResult] = ()):
  """(target, met, measured) rows."""
  rows = []
  for s in steps:
    a = s.state_bytes["adamw"]
    for k in kinds[1:]:
      b = s.state_bytes[k]
      extra = b - a
      rows.append((f"state bytes {s.label} ({_kind_name(k)})", extra == 0,
                   f"{b:,} vs {a:,}" + (f" (+{extra} B: {extra // 4} ratio scalar(s))"
                                         if extra else "")))
  for s in steps:
    for k in kinds[1:]:
      r = s.ratio(k)
      rows.append((f"step time {s.label} ({_kind_name(k)})", r <= STEP_TARGET, f"{r:.3f}x"))
  for i in inner:
    rows.append((f"step time {i.step.label}: layerwise({i.expr}) / {i.expr}",
                 i.ratio <= STEP_TARGET, f"{i.ratio:.3f}x"))
  for c in comps:
    for k in kinds[1:]:
      r = c.ratio(k)
      rows.append((f"trace+compile {c.label} ({_kind_name(k)})", r <= COMPILE_TARGET,
                   f"{r:.2f}x"))
  scanned = [c for c in comps if c.label.endswith("scanned")]
  if len(scanned) > 1:
    lo, hi = scanned[0], scanned[-1]
    dep = {k: hi.total(k) / lo.total(k) for k in kinds}
    for k in kinds[1:]:
      rows.append((
        f"scanned trace+compile {hi.label.split()[1]} / {lo.label.split()[1]} ({_kind_name(k)})",
        dep[k] <= COMPILE_TARGET,
        f"{dep[k]:.2f}x (optax.adamw: {dep['adamw']:.2f}x)",
      ))
  return rows


def render(*, command: str, quick: bool, elapsed: float, load: tuple, kinds, bw: dict,
           bw_bytes: int, steps, comps, peers, variant_notes: dict, inner=()) -> str:
  """The whole RESULTS.md."""
  other = kinds[2:]
  step_rows = []
  for s in steps:
    row = [s.label + (f" ({_optimizers.SCANNED_NOTE})" if s.scanned else ""),
           f"{s.n_params / 1e6:.1f}M", s.n_leaves, fmt_ms(s.median("adamw")),
           fmt_ms(s.median("adamwdl")), f"{s.ratio('adamwdl'):.3f}"]
    for k in other:
      row += [fmt_ms(s.median(k)), f"{s.ratio(k):.3f}"]
    step_rows.append(row + [f"{s.warmup}+{s.repeats}"])
  step_head = ["tree", "params", "leaves", "optax.adamw ms", "adamwdl ms", "ratio"]
  for k in other:
    step_head += [f"{_kind_name(k)} ms", f"{_kind_name(k)} ratio"]
  step_head.append("warm-up+timed")

  inner_rows = []
  for i in inner:
    s = i.step
    inner_rows.append([f"`{i.expr}`", s.label, f"{s.n_params / 1e6:.1f}M", s.n_leaves,
                       fmt_ms(s.median("inner")), fmt_ms(s.median("layerwise")),
                       f"{i.ratio:.3f}", f"{i.extra_state_bytes:+,} B", f"{s.warmup}+{s.repeats}"])

  comp_rows = []
  for c in comps:
    row = [c.label, c.n_leaves, fmt_s(c.median("adamw", "trace")),
           fmt_s(c.median("adamwdl", "trace")), fmt_s(c.median("adamw", "compile")),
           fmt_s(c.median("adamwdl", "compile")),
           f"{c.median('adamwdl', 'trace') / c.median('adamw', 'trace'):.2f}",
           f"{c.ratio('adamwdl'):.2f}"]
    row += [f"{c.ratio(k):.2f}" for k in other]
    comp_rows.append(row)
  comp_head = ["tree", "leaves", "adamw trace+lower", "adamwdl trace+lower", "adamw compile",
               "adamwdl compile", "trace ratio", "trace+compile ratio"]
  comp_head += [f"{_kind_name(k)} trace+compile ratio" for k in other]

  state_rows = []
  for s in steps:
    a, b = s.state_bytes["adamw"], s.state_bytes["adamwdl"]
    state_rows.append([s.label, f"{s.n_params / 1e6:.1f}M", s.n_leaves, f"{a:,}", f"{b:,}",
                       f"{b - a:+,} B", f"{b / a:.7f}"])

  peer_rows = []
  for p in peers:
    if p.why_not is not None:
      peer_rows.append([p.label, p.peer, p.why_not, "", "", ""])
    else:
      peer_rows.append([p.label, p.peer, fmt_ms(p.peer_s), fmt_ms(p.adamwdl_s),
                        f"{p.adamwdl_s / p.peer_s:.3f}", p.how])

  roof_rows = []
  for s in steps:
    moved = 28 * s.n_params  # read p, g, m, v; write p, m, v (float32)
    roof = moved / bw["best"]
    ours = s.median("adamwdl")
    roof_rows.append([s.label, f"{moved / 1e9:.2f}", fmt_ms(roof), fmt_ms(s.median("adamw")),
                      fmt_ms(ours), f"{moved / ours / 1e9:.1f}", f"{roof / ours * 100:.0f}%"])

  variants = "".join(f"\n- `{_kind_name(k)}`: {variant_notes[k]}" for k in other)
  parts = [
    "# optax_ldl benchmarks",
    "",
    f"Generated by `{command}` ({'--quick' if quick else 'full'} run, {elapsed / 60:.1f} min) "
    f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
    "",
    "## Machine",
    "",
    machine(),
    f"- jax {jax.__version__}, jaxlib {getattr(__import__('jaxlib'), '__version__', '?')}, "
    f"optax {optax.__version__}, numpy {np.__version__}; backend `{jax.default_backend()}`",
    "- GPU: none in this session, so the HBM-bandwidth row is "
    "**not measured: no GPU in this session**.",
    f"- Load average (1 min) at the start and end of the run: {load[0]:.1f} and {load[1]:.1f} "
    f"on {os.cpu_count()} cores. The machine is shared (other jobs run in parallel): only "
    "ratios measured alternately in one process are meaningful; absolute times are noisy.",
    "",
    "Setup: HF-Flax BERT paths (`bert/embeddings/word_embeddings/embedding`, "
    "`bert/encoder/layer/N/attention/self/query/kernel`, ..., `bert/pooler`, `classifier`), "
    "float32; weight decay 0.01 masked off biases and LayerNorm for every optimizer; "
    f"`adamwdl(layerwise_decay={_trees.LAYERWISE_DECAY})`. One step = `tx.update` + "
    "`optax.apply_updates` under one `jax.jit` with params and state donated. Scanned trees "
    "stack each layer weight on a leading layers axis "
    "(`bert/encoder/layer/attention/self/query/kernel: (L, h, h)`); for them adamwdl uses "
    f"{_optimizers.SCANNED_NOTE}." + (f" Variants measured in the same run:{variants}"
                                      if other else ""),
    "",
    "## Targets",
    "",
    table(["target", "met", "measured"],
          [[t, "yes" if ok else "**no**", v]
           for t, ok, v in targets(kinds, steps, comps, inner)]),
    "",
    "## Update step time (median, alternated in one process)",
    "",
    table(step_head, step_rows),
    "",
    "## layerwise(inner) against inner alone (median, alternated in one process)",
    "",
    f"`optax_ldl.layerwise(inner, layerwise_decay={_trees.LAYERWISE_DECAY})` against `inner` "
    "itself, each inner optimizer as written (no weight-decay mask), on the unrolled tree; the "
    f"same donated jitted step as above. Target: ratio <= {STEP_TARGET}. `state` is the "
    "layerwise state's extra bytes (the stored ratios, one float32 each).",
    "",
    table(["inner", "tree", "params", "leaves", "inner ms", "layerwise(inner) ms", "ratio",
           "state", "warm-up+timed"], inner_rows)
    if inner_rows else "Not run (`--inner` with no names).",
    "",
    "## Trace+lower and compile (median of alternated runs, seconds)",
    "",
    table(comp_head, comp_rows),
    "",
    "## Optimizer state bytes",
    "",
    table(["tree", "params", "leaves", "optax.adamw", "adamwdl", "difference", "ratio"],
          state_rows),
    "",
    "## Peers (same shapes, same per-layer ratios and decay mask)",
    "",
    table(["tree", "peer", "peer ms", "adamwdl ms", "adamwdl / peer", "how"], peer_rows)
    if peer_rows else "Not run (`--no-peers`).",
    "",
    "## Memory-bandwidth roofline",
    "",
    f"Measured copy bandwidth (read+write bytes / time, {bw_bytes >> 20} MiB float32): "
    f"numpy `copyto` {bw['numpy_copy'] / 1e9:.1f} GB/s, "
    f"jitted `x*a+b` (donated) {bw['jax_axpb'] / 1e9:.1f} GB/s; "
    f"roofline uses the best, {bw['best'] / 1e9:.1f} GB/s. One float32 AdamW step moves "
    "28 bytes/param (read param, grad, mu, nu; write param, mu, nu).",
    "",
    table(["tree", "GB moved/step", "roofline ms", "optax.adamw ms", "adamwdl ms",
           "adamwdl GB/s", "adamwdl % of roofline"], roof_rows),
    "",
    "GPU HBM bandwidth for the update on BERT-large: **not measured: no GPU in this session**.",
    "",
  ]
  notes = os.path.join(HERE, "NOTES.md")
  if os.path.exists(notes):
    with open(notes) as f:
      parts.append(f.read())
  return "\n".join(parts)


def raw(bw, steps, comps, peers: list[_peers.PeerResult], inner=()) -> dict:
  """RESULTS.json: every timing."""
  return {
    "bandwidth": bw,
    "steps": {s.label: {"times": s.times, "n_params": s.n_params,
                        "state_bytes": s.state_bytes} for s in steps},
    "compile": {c.label: c.times for c in comps},
    "peers": {f"{p.peer} {p.label}": p.raw or p.why_not for p in peers},
    "layerwise_inner": {f"{i.expr} {i.step.label}": {"times": i.step.times,
                                                     "state_bytes": i.step.state_bytes}
                        for i in inner},
  }
