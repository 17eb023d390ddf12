"""Benchmarks for optax_ldl.adamwdl against optax.adamw and peers.

    python benchmarks/run.py            # full (~15-20 min on 2 CPU cores)
    python benchmarks/run.py --quick    # small shapes, smoke test (< 2 min)

Prints the tables and writes benchmarks/RESULTS.md (the "What we tried"
section is kept from benchmarks/NOTES.md). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _trees  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optax_ldl  # noqa: E402

LR, WD = 1e-4, 0.01


# ----------------------------------------------------------------- trees


def nest(flat: dict) -> dict:
  out: dict = {}
  for name, v in flat.items():
    d = out
    *head, last = name.split("/")
    for k in head:
      d = d.setdefault(k, {})
    d[last] = v
  return out


def sds_tree(shape: str, n_layers: int | None = None, scanned: bool = False):
  n_lay, h, i = _trees.SHAPES[shape]
  n_lay = n_lay if n_layers is None else n_layers
  flat = _trees.flat_shapes(n_lay, h, i, scanned)
  return n_lay, nest({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in flat.items()})


def mask_of(tree):
  return jax.tree_util.tree_map_with_path(lambda p, _: _trees.decays(optax_ldl.path_name(p)), tree)


def real_tree(sds, seed: int, scale: float):
  leaves, treedef = jax.tree.flatten(sds)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = [
    jax.block_until_ready(scale * jax.random.normal(k, x.shape, x.dtype))
    for k, x in zip(keys, leaves)
  ]
  return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------- optimizers

HAS_STACKED = "stacked" in inspect.signature(optax_ldl.adamwdl).parameters


def make_tx(kind: str, tree, n_layers: int, scanned: bool):
  mask = mask_of(tree)
  if kind == "adamw":
    return optax.adamw(LR, weight_decay=WD, mask=mask)
  kw = dict(weight_decay=WD, layerwise_decay=_trees.LAYERWISE_DECAY, n_layers=n_layers, mask=mask)
  if scanned:
    if HAS_STACKED:
      kw["stacked"] = {"bert/encoder/layer": 0}
    else:
      # Today: the default rule finds no layer index in a stacked path, so the
      # stacked subtree gets one ratio through a custom rule.
      kw["set_param_lr_fun"] = lambda d, nd, n, p: _trees.ratio(p.name, n, d)
  return optax_ldl.adamwdl(LR, **kw)


def scanned_note() -> str:
  return (
    "per-slice ratios (`stacked={'bert/encoder/layer': 0}`)"
    if HAS_STACKED
    else "one ratio per stacked leaf (no `stacked` option yet)"
  )


def step_fn(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


def jit_step(tx):
  return jax.jit(step_fn(tx), donate_argnums=(0, 1))


def state_bytes(tx, sds) -> int:
  st = jax.eval_shape(tx.init, sds)
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(st))


# --------------------------------------------------------------- timing


def median(xs):
  return statistics.median(xs)


def bench_steps(runners: dict, warmup: int, repeats: int) -> dict:
  """runners: name -> callable doing one full step and blocking. Alternates."""
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
  def __init__(self, tx, params, grads):
    self.tx = tx
    self.step = jit_step(tx)
    self.params = jax.tree.map(jnp.copy, params)
    self.state = jax.jit(tx.init)(self.params)
    self.grads = grads
    jax.block_until_ready((self.params, self.state))

  def __call__(self):
    self.params, self.state = self.step(self.params, self.state, self.grads)
    jax.block_until_ready(self.params)


def run_peer(python: str, script: str, module: str, args, timeout: int):
  """Runs a peer script; (its JSON result, None) or (None, why not)."""
  cmd = [python, os.path.join(HERE, script), *(str(int(a)) for a in args)]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except Exception as e:  # noqa: BLE001
    return None, f"failed: {e}"
  for line in out.stdout.splitlines()[::-1]:
    if line.startswith("{"):
      return json.loads(line), None
  if f"No module named '{module}'" in out.stderr:
    return None, "not installed"
  err = (out.stderr.strip().splitlines() or ["?"])[-1]
  return None, f"failed: {err[:80]}"


def torch_step(n_layers, h, i, scanned, warmup, repeats):
  """The torch peer in a process of its own (``_torch_peer.py``)."""
  import importlib.util

  if importlib.util.find_spec("torch") is None:
    return None, "not installed (pip install -e '.[bench]')"
  return run_peer(sys.executable, "_torch_peer.py", "torch",
                  (n_layers, h, i, scanned, warmup, repeats), timeout=1800)


def paddle_step(python: str, n_layers, h, i, scanned, warmup, repeats):
  """The Paddle peer, with the interpreter that has paddlepaddle (``_paddle_peer.py``)."""
  if not python:
    return None, "not run (no --paddle-python / $PADDLE_PYTHON)"
  if not os.path.exists(python):
    return None, f"not installed ({python} does not exist)"
  return run_peer(python, "_paddle_peer.py", "paddle",
                  (n_layers, h, i, scanned, warmup, repeats), timeout=900)


# ----------------------------------------------------------- compile


def compile_times(kinds, shape, depth, scanned, repeats):
  """Alternating trace+lower / compile times of the full jitted update."""
  n_lay, sds = sds_tree(shape, depth, scanned)
  out = {k: {"trace": [], "compile": []} for k in kinds}
  for r in range(repeats + 1):  # round 0: untimed warm-up
    order = kinds if r % 2 == 0 else kinds[::-1]
    for k in order:
      tx = make_tx(k, sds, n_lay, scanned)  # fresh closure: no jit cache hit
      st = jax.eval_shape(tx.init, sds)
      t0 = time.perf_counter()
      lowered = jit_step(tx).trace(sds, st, sds).lower()
      t1 = time.perf_counter()
      lowered.compile()
      t2 = time.perf_counter()
      if r:
        out[k]["trace"].append(t1 - t0)
        out[k]["compile"].append(t2 - t1)
  return out


# ---------------------------------------------------------- bandwidth


def copy_bandwidth(n_bytes: int, repeats: int = 5) -> dict:
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


# --------------------------------------------------------------- main


def fmt_ms(s):
  return f"{s * 1e3:.1f}"


def fmt_s(s):
  return f"{s:.2f}"


def table(header, rows):
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(out)


def main():
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
  ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
  args = ap.parse_args()

  if args.quick:
    step_shapes = [("bert-mini", 5, 15)]
    depths, compile_shape, compile_reps = [2, 4, 8], "bert-mini", 2
    bw_bytes = 64 << 20
  else:
    # (shape, warm-up steps, timed steps per optimizer)
    step_shapes = [("bert-base", 5, 41), ("bert-large", 3, 15)]
    depths, compile_shape, compile_reps = [12, 48, 96], "bert-base", 5
    bw_bytes = 512 << 20

  t_start = time.time()
  print(
    f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}, "
    f"devices {jax.devices()}; stacked option: {HAS_STACKED}",
    flush=True,
  )

  bw = copy_bandwidth(bw_bytes)
  print(
    f"copy bandwidth: numpy {bw['numpy_copy'] / 1e9:.1f} GB/s, jax {bw['jax_axpb'] / 1e9:.1f} GB/s",
    flush=True,
  )

  step_rows, peer_rows, state_rows, roof_rows = [], [], [], []
  results = {"bandwidth": bw, "steps": {}, "compile": {}, "peers": {}}
  targets = []

  for shape, warmup, reps in step_shapes:
    for scanned in (False, True):
      label = f"{shape} {'scanned' if scanned else 'unrolled'}"
      n_lay, sds = sds_tree(shape, None, scanned)
      _, h, i = _trees.SHAPES[shape]
      n = _trees.n_params(_trees.flat_shapes(n_lay, h, i, scanned))
      n_leaves = len(jax.tree.leaves(sds))
      txs = {k: make_tx(k, sds, n_lay, scanned) for k in ("adamw", "adamwdl")}
      sb = {k: state_bytes(tx, sds) for k, tx in txs.items()}
      state_rows.append(
        [
          label,
          f"{n / 1e6:.1f}M",
          n_leaves,
          f"{sb['adamw']:,}",
          f"{sb['adamwdl']:,}",
          f"{sb['adamwdl'] - sb['adamw']:+,} B",
          f"{sb['adamwdl'] / sb['adamw']:.7f}",
        ]
      )
      extra = sb["adamwdl"] - sb["adamw"]
      targets.append(
        (
          f"state bytes {label}",
          extra == 0,
          f"{sb['adamwdl']:,} vs {sb['adamw']:,}"
          + (f" (+{extra} B: {extra // 4} ratio scalar(s))" if extra else ""),
        )
      )

      params = real_tree(sds, 0, 0.02)
      grads = real_tree(sds, 1, 1e-3)
      runners = {k: JaxRunner(tx, params, grads) for k, tx in txs.items()}
      del params
      times = bench_steps(runners, warmup, reps)
      med = {k: median(v) for k, v in times.items()}
      ratio = med["adamwdl"] / med["adamw"]
      step_rows.append(
        [
          label + (f" ({scanned_note()})" if scanned else ""),
          f"{n / 1e6:.1f}M",
          n_leaves,
          fmt_ms(med["adamw"]),
          fmt_ms(med["adamwdl"]),
          f"{ratio:.3f}",
          f"{warmup}+{reps}",
        ]
      )
      targets.append((f"step time {label}", ratio <= 1.03, f"{ratio:.3f}x"))
      moved = 28 * n  # read p, g, m, v; write p, m, v (float32)
      roof = moved / bw["best"]
      roof_rows.append(
        [
          label,
          f"{moved / 1e9:.2f}",
          fmt_ms(roof),
          fmt_ms(med["adamw"]),
          fmt_ms(med["adamwdl"]),
          f"{moved / med['adamwdl'] / 1e9:.1f}",
          f"{roof / med['adamwdl'] * 100:.0f}%",
        ]
      )
      results["steps"][label] = {"times": times, "n_params": n}
      print(
        f"[{time.time() - t_start:6.0f}s] step {label}: adamw {fmt_ms(med['adamw'])} ms, "
        f"adamwdl {fmt_ms(med['adamwdl'])} ms, ratio {ratio:.3f}",
        flush=True,
      )

      # Peers, each in a process of its own. torch: rounds of (torch process,
      # the same number of adamwdl steps here), so that both see the same load.
      if not args.no_peers:
        runners.pop("adamw")
        gc.collect()
        rounds, per_round = 3, max(3, reps // 3)
        pt, ours, err = [], [], None
        for _ in range(rounds):
          pr, err = torch_step(n_lay, h, i, scanned, min(warmup, 3), per_round)
          if pr is None:
            break
          pt.append(pr)
          ours += bench_steps({"adamwdl": runners["adamwdl"]}, 1, per_round)["adamwdl"]
        if pt:
          torch_ms = median([t for pr in pt for t in pr["times"]])
          ours_ms = median(ours)
          peer_rows.append(
            [
              label,
              f"torch {pt[0]['version']} AdamW(fused=True), {pt[0]['n_groups']} groups",
              fmt_ms(torch_ms),
              fmt_ms(ours_ms),
              f"{ours_ms / torch_ms:.3f}",
              f"own process; {rounds} rounds alternated with adamwdl",
            ]
          )
          results["peers"][f"torch {label}"] = {"torch": pt, "adamwdl": ours}
          print(
            f"[{time.time() - t_start:6.0f}s] torch {label}: {fmt_ms(torch_ms)} ms vs adamwdl "
            f"{fmt_ms(ours_ms)} ms",
            flush=True,
          )
        else:
          peer_rows.append([label, "torch AdamW(fused=True)", err, "", "", ""])
        adamwdl_ms = med["adamwdl"]
        del runners, grads
        gc.collect()
        pr, err = paddle_step(args.paddle_python, n_lay, h, i, scanned, warmup, reps)
        if pr is None:
          peer_rows.append([label, "Paddle AdamW (per-param lr)", err, "", "", ""])
        else:
          peer_rows.append(
            [
              label,
              f"Paddle {pr['version']} AdamW, ParamAttr lr per param",
              fmt_ms(pr["median_s"]),
              fmt_ms(adamwdl_ms),
              f"{adamwdl_ms / pr['median_s']:.3f}",
              "subprocess; adamwdl from the step table",
            ]
          )
          results["peers"][f"paddle {label}"] = pr
          print(
            f"[{time.time() - t_start:6.0f}s] paddle {label}: {fmt_ms(pr['median_s'])} ms",
            flush=True,
          )
      else:
        del runners, grads
      gc.collect()

  # Trace+lower and compile.
  comp_rows = []
  for scanned in (False, True):
    for d in depths:
      ct = compile_times(["adamw", "adamwdl"], compile_shape, d, scanned, compile_reps)
      m = {k: {p: median(v[p]) for p in v} for k, v in ct.items()}
      tot = {k: m[k]["trace"] + m[k]["compile"] for k in m}
      r = tot["adamwdl"] / tot["adamw"]
      label = f"{compile_shape} x{d} {'scanned' if scanned else 'unrolled'}"
      _, sds = sds_tree(compile_shape, d, scanned)
      comp_rows.append(
        [
          label,
          len(jax.tree.leaves(sds)),
          fmt_s(m["adamw"]["trace"]),
          fmt_s(m["adamwdl"]["trace"]),
          fmt_s(m["adamw"]["compile"]),
          fmt_s(m["adamwdl"]["compile"]),
          f"{m['adamwdl']['trace'] / m['adamw']['trace']:.2f}",
          f"{r:.2f}",
        ]
      )
      results["compile"][label] = ct
      targets.append((f"trace+compile {label}", r <= 1.25, f"{r:.2f}x"))
      print(
        f"[{time.time() - t_start:6.0f}s] compile {label}: adamw {tot['adamw']:.2f}s adamwdl "
        f"{tot['adamwdl']:.2f}s ratio {r:.2f}",
        flush=True,
      )
  # Scanned: depth independence (adamwdl compile+trace at deepest / shallowest).
  dep = {}
  for k in ("adamw", "adamwdl"):
    sc = [results["compile"][f"{compile_shape} x{d} scanned"][k] for d in (depths[0], depths[-1])]
    tot_sc = [median(x["trace"]) + median(x["compile"]) for x in sc]
    dep[k] = tot_sc[1] / tot_sc[0]
  targets.append(
    (
      f"scanned trace+compile x{depths[-1]} / x{depths[0]} (adamwdl)",
      dep["adamwdl"] <= 1.25,
      f"{dep['adamwdl']:.2f}x (optax.adamw: {dep['adamw']:.2f}x)",
    )
  )

  elapsed = time.time() - t_start
  md = render(args, bw, step_rows, comp_rows, state_rows, peer_rows, roof_rows, targets, elapsed)
  print("\n" + md)
  with open(args.out, "w") as f:
    f.write(md)
  with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
    json.dump(results, f, default=float)
  print(f"\nwrote {args.out} ({elapsed:.0f}s)")


def machine() -> str:
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    keep = ("Model name", "CPU(s):", "Thread(s) per core", "L2 cache", "L3 cache", "Flags")
    lines = []
    for ln in lscpu.splitlines():
      if ln.startswith(keep):
        if ln.startswith("Flags"):
          fl = ln.split(":", 1)[1].split()
          ln = "Flags (SIMD): " + " ".join(x for x in fl if x.startswith(("avx", "fma", "sse4")))
        lines.append(" ".join(ln.split()))
  except Exception:  # noqa: BLE001
    lines = []
  nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
  mem = ""
  try:
    with open("/proc/meminfo") as f:
      mem = f.readline().split(":")[1].strip()
  except OSError:
    pass
  return "\n".join(
    [f"- nproc: {nproc}; MemTotal {mem}; {platform.platform()}; Python {platform.python_version()}"]
    + [f"- {x}" for x in lines]
  )


def render(
  args, bw, step_rows, comp_rows, state_rows, peer_rows, roof_rows, targets, elapsed
) -> str:
  mode = "--quick" if args.quick else "full"
  parts = [
    "# optax_ldl benchmarks",
    "",
    f"Generated by `python benchmarks/run.py{' --quick' if args.quick else ''}` ({mode} run, "
    f"{elapsed / 60:.1f} min) on "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
    "",
    "## Machine",
    "",
    machine(),
    f"- jax {jax.__version__}, jaxlib {getattr(__import__('jaxlib'), '__version__', '?')}, "
    f"optax {optax.__version__}, numpy {np.__version__}; backend `{jax.default_backend()}`",
    "- GPU: none in this session, so the HBM-bandwidth row is "
    "**not measured: no GPU in this session**.",
    "- The machine is shared (other jobs run in parallel): only ratios measured alternately in one "
    "process are meaningful; absolute times are noisy.",
    "",
    "Setup: HF-Flax BERT paths (`bert/embeddings/word_embeddings/embedding`, "
    "`bert/encoder/layer/N/attention/self/query/kernel`, ..., `bert/pooler`, `classifier`), "
    "float32; "
    "weight decay 0.01 masked off biases and LayerNorm for every optimizer; "
    f"`adamwdl(layerwise_decay={_trees.LAYERWISE_DECAY})`. One step = `tx.update` + "
    "`optax.apply_updates` "
    "under one `jax.jit` with params and state donated. Scanned trees stack each layer weight "
    "on a leading layers axis (`bert/encoder/layer/attention/self/query/kernel: (L, h, h)`); "
    f"for them adamwdl uses {scanned_note()}.",
    "",
    "## Targets",
    "",
    table(
      ["target", "met", "measured"], [[t, "yes" if ok else "**no**", v] for t, ok, v in targets]
    ),
    "",
    "## Update step time (median, alternated in one process)",
    "",
    table(
      ["tree", "params", "leaves", "optax.adamw ms", "adamwdl ms", "ratio", "warm-up+timed"],
      step_rows,
    ),
    "",
    "## Trace+lower and compile (median of alternated runs, seconds)",
    "",
    table(
      [
        "tree",
        "leaves",
        "adamw trace+lower",
        "adamwdl trace+lower",
        "adamw compile",
        "adamwdl compile",
        "trace ratio",
        "trace+compile ratio",
      ],
      comp_rows,
    ),
    "",
    "## Optimizer state bytes",
    "",
    table(
      ["tree", "params", "leaves", "optax.adamw", "adamwdl", "difference", "ratio"], state_rows
    ),
    "",
    "## Peers (same shapes, same per-layer ratios and decay mask)",
    "",
    table(["tree", "peer", "peer ms", "adamwdl ms", "adamwdl / peer", "how"], peer_rows),
    "",
    "## Memory-bandwidth roofline",
    "",
    "Measured copy bandwidth (read+write bytes / time, "
    f"{('64 MiB' if args.quick else '512 MiB')} float32): "
    f"numpy `copyto` {bw['numpy_copy'] / 1e9:.1f} GB/s, "
    f"jitted `x*a+b` (donated) {bw['jax_axpb'] / 1e9:.1f} GB/s; "
    f"roofline uses the best, {bw['best'] / 1e9:.1f} GB/s. "
    "One float32 AdamW step moves 28 bytes/param "
    "(read param, grad, mu, nu; write param, mu, nu).",
    "",
    table(
      [
        "tree",
        "GB moved/step",
        "roofline ms",
        "optax.adamw ms",
        "adamwdl ms",
        "adamwdl GB/s",
        "adamwdl % of roofline",
      ],
      roof_rows,
    ),
    "",
    "GPU HBM bandwidth for the update on BERT-large: **not measured: no GPU in this session**.",
    "",
  ]
  notes = os.path.join(HERE, "NOTES.md")
  if os.path.exists(notes):
    with open(notes) as f:
      parts += [f.read()]
  return "\n".join(parts)


if __name__ == "__main__":
  main()
