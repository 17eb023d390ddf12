"""Pretrain a small transformer, then fine-tune it on a few samples, with and without decay.

    python -m optax_ldl.demo [--decays 1.0,0.75] [--seeds 3] [--small] [--quiet]
    python -m optax_ldl.demo --unfreeze [--plot ratios.png]

Layer-wise learning-rate decay is a fine-tuning technique: the layers near the
input, which hold the most general features of a pretrained model, get the
smallest learning rate. It comes from fine-tuning pretrained models (ULMFiT's
discriminative fine-tuning, ELECTRA, BEiT); Zhang et al. 2021, "Revisiting
Few-sample BERT Fine-tuning", study it among the methods for fine-tuning on few
samples. On a model trained from scratch it only slows the lower layers down.
So this demo does what those papers do, in about a minute on a CPU, with
nothing downloaded:

1. **Pretrain** (once): a pre-norm transformer learns a token-tagging *source*
   task. Every token has a hidden colour (a fixed random map of the
   vocabulary), and the first token of a sequence sets the *dialect*: in
   dialect 1 every colour is shifted by 2. Tagging each token with its colour
   needs the dialect routed from position 0 to every position (attention) and
   combined with the token (work for the lower layers), with dense supervision.
2. **Fine-tune** on a few samples of a *target* task that reuses those
   features: a sequence label, "more colour-0 tokens than colour-1 tokens",
   read from the mean-pooled output by a new, randomly initialised head. For
   each decay and seed, AdamW with layer-wise decay (``optax_ldl.adamwdl``,
   decay 1.0 is plain AdamW) with the BERT recipe (linear warmup then linear
   decay, weight decay 0.01 on kernels only). The seed draws the few training
   samples, the new head and the batch order; the test sets are fixed.
3. **Report**, mean ± std over the seeds: the lr of each layer group
   (``optax_ldl.describe``), how far each group moved from the pretrained
   weights (``||Δθ|| / ||θ0||``, ``layer_drift``), target accuracy and loss on
   held-out sequences, and *source retention*: the source task's tagging
   accuracy of the fine-tuned model read with the (frozen) pretrained source
   head, i.e. how much of the pretrained skill survived fine-tuning.

With ``--unfreeze`` each decay is also run with two layer schedules
(``layer_schedule=``), over the same seeds: ULMFiT's *gradual unfreezing* (the
head alone first, then one more layer from the top every ``steps / (L + 2)``
steps, the embeddings last) and Lightning's *backbone ramp* (the head from the
start; everything below it ramps from 0 to its ratio over the steps
``steps / 10`` to ``steps / 10 + steps / 4``). The report then shows each
layer group's lr ratio over the steps (``describe(..., step=t)``), and
``--plot FILE`` draws it (Matplotlib).

The settings were chosen from the literature before running, not tuned to make
either decay win; whatever the numbers show is what this setting does.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_ldl
from optax_ldl._src.drift import layer_drift

VOCAB, SEQ_LEN, COLOURS = 48, 16, 4
# The world both tasks live in: token t (>= 2) has colour COLOUR[t]; tokens 0 and 1
# only appear first, as the dialect marker.
_WORLD = np.random.default_rng(20210101)
COLOUR = np.concatenate([[0, 0], _WORLD.permutation(np.arange(VOCAB - 2) % COLOURS)])

DEFAULTS: dict[str, Any] = dict(
    decays="1.0,0.75", seeds=3, layers=4, width=64, heads=4, pretrain_steps=400,
    pretrain_batch=32, pretrain_lr=3e-3, samples=64, steps=200, batch=16, lr=1e-3,
    warmup=0.1, weight_decay=0.01, eval_samples=2000,
)
# --small: for tests, about 20 s of CPU, mostly compiling (flags given explicitly still win).
SMALL: dict[str, Any] = dict(
    seeds=2, layers=2, width=32, heads=2, pretrain_steps=60, samples=32, steps=20,
    batch=8, eval_samples=256,
)


# --- the tasks ---------------------------------------------------------------------------------

def _sequences(rng: np.random.Generator, n: int) -> np.ndarray:
  tokens = rng.integers(2, VOCAB, size=(n, SEQ_LEN))
  tokens[:, 0] = rng.integers(0, 2, size=n)  # the dialect marker.
  return tokens


def colours(tokens: np.ndarray) -> np.ndarray:
  """Each token's colour in context: shifted by 2 in dialect 1 (first token 1)."""
  return np.where(tokens[:, :1] == 1, (COLOUR[tokens] + 2) % COLOURS, COLOUR[tokens])


def source_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The source task: tag every token with its colour in context."""
  tokens = _sequences(np.random.default_rng(seed), n)
  return tokens.astype(np.int32), colours(tokens).astype(np.int32)


def target_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The target task: 1 when colour-0 tokens outnumber colour-1 tokens (no ties)."""
  rng = np.random.default_rng(seed)
  xs, ys, have = [], [], 0
  while have < n:
    tokens = _sequences(rng, 2 * n)
    c = colours(tokens)
    zeros, ones = (c == 0).sum(1), (c == 1).sum(1)
    keep = zeros != ones
    xs.append(tokens[keep])
    ys.append((zeros > ones)[keep])
    have += int(keep.sum())
  return (np.concatenate(xs)[:n].astype(np.int32), np.concatenate(ys)[:n].astype(np.int32))


# --- the model ---------------------------------------------------------------------------------

class Block(nn.Module):
  """A pre-norm transformer block."""

  width: int
  heads: int

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(name="attention_norm")(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attention")(h, h)
    h = nn.LayerNorm(name="mlp_norm")(x)
    h = nn.Dense(2 * self.width, name="mlp_in")(h)
    return x + nn.Dense(self.width, name="mlp_out")(nn.gelu(h))


class Model(nn.Module):
  """Embeddings, ``layers_0 .. layers_{n-1}``, a final norm, two heads.

  Returns ``(source_logits, target_logits)``: per-token colour logits and the
  sequence label's logits from the mean-pooled output.
  """

  n_layers: int = 4
  width: int = 64
  heads: int = 4

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(VOCAB, self.width, name="word_embeddings")(tokens)
    positions = self.param("position_embeddings", nn.initializers.normal(0.02),
                           (SEQ_LEN, self.width))
    x = x + positions[None]
    for i in range(self.n_layers):
      x = Block(self.width, self.heads, name=f"layers_{i}")(x)
    x = nn.LayerNorm(name="final_norm")(x)
    return nn.Dense(COLOURS, name="source_head")(x), nn.Dense(2, name="target_head")(x.mean(1))


def apply_weight_decay(name: str) -> bool:
  """The recommended filter (:func:`optax_ldl.weight_decay_filter`), embeddings exempt.

  No decay on biases, norm scales or embeddings, for linen (``LayerNorm_0/scale``,
  ``Embed_0/embedding``) and Hugging Face names (``LayerNorm/bias``).

  >>> [apply_weight_decay(n) for n in ('layers_0/mlp_in/kernel', 'layers_0/mlp_in/bias',
  ...  'layers_0/LayerNorm_0/scale', 'word_embeddings/embedding', 'position_embeddings')]
  [True, False, False, False, False]
  """
  return optax_ldl.weight_decay_filter(name, embeddings=False)


# --- training ----------------------------------------------------------------------------------

def _loss(logits, labels):
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def _make_step(model: Model, tx: optax.GradientTransformation, task: int) -> Callable:
  """A jitted train step for ``tx`` (compiled once, reused for every seed)."""

  def loss_fn(params, frozen, x, y):
    return _loss(model.apply({"params": {**params, **frozen}}, x)[task], y)

  @jax.jit
  def step(params, opt_state, frozen, x, y):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def _warmup_linear(peak: float, steps: int, warmup: float) -> optax.Schedule:
  warm = max(1, round(warmup * steps)) if warmup > 0 else 0
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warm), optax.linear_schedule(peak, 0.0, steps - warm)],
      [warm],
  )


class Progress:
  """One line per phase on stderr, with the seconds since the start (the report is stdout).

  Off with ``--quiet``.
  """

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.start = time.perf_counter()

  def __call__(self, message: str) -> None:
    if self.enabled:
      print(f"[{time.perf_counter() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)


def pretrain(args: argparse.Namespace, model: Model,
             progress: Progress | None = None) -> tuple[Any, float]:
  """Trains the model on the source task; returns the params and the wall time."""
  progress = progress or Progress(enabled=False)
  start = time.perf_counter()
  # The random initialisers run once: compiled without XLA's backend optimisations, which
  # would take seconds on them.
  init = jax.jit(model.init, compiler_options={"xla_backend_optimization_level": 0})
  params = init(jax.random.key(0), jnp.zeros((1, SEQ_LEN), jnp.int32))["params"]
  tx = optax.adamw(_warmup_linear(args.pretrain_lr, args.pretrain_steps, args.warmup),
                   weight_decay=args.weight_decay, mask=_decay_mask)
  step = _make_step(model, tx, task=0)
  opt_state = jax.jit(tx.init)(params)
  x, y = source_data(args.pretrain_steps * args.pretrain_batch, seed=1)
  b = args.pretrain_batch
  quarter = max(1, args.pretrain_steps // 4)
  for i in range(args.pretrain_steps):
    params, opt_state, loss = step(params, opt_state, {}, x[i * b:(i + 1) * b],
                                   y[i * b:(i + 1) * b])
    if (i + 1) % quarter == 0 and i + 1 < args.pretrain_steps:
      progress(f"pretraining: step {i + 1}/{args.pretrain_steps}, loss {float(loss):.3f}")
  jax.block_until_ready(params)
  return params, time.perf_counter() - start


def _decay_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: apply_weight_decay(jax.tree_util.keystr(path, simple=True, separator="/")),
      params)


def mean_std(values: Sequence[float]) -> str:
  """``mean ± std`` (the sample std; 0 for one value)."""
  v = np.asarray(values, np.float64)
  std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
  return f"{v.mean():.3f} ± {std:.3f}"


# --- the command line --------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
  assert __doc__ is not None
  p = argparse.ArgumentParser(
      prog="python -m optax_ldl.demo", description=__doc__.splitlines()[0],
      formatter_class=lambda prog: argparse.ArgumentDefaultsHelpFormatter(
          prog, max_help_position=26, width=110))
  def add(flag, kind, metavar, text):
    p.add_argument(flag, type=kind, metavar=metavar, help=text)

  add("--decays", str, "D,D", "layer-wise decays to compare, each in (0, 1]; 1.0 = AdamW")
  add("--seeds", int, "N", "fine-tuning seeds per decay (>= 1)")
  add("--layers", int, "N", "transformer layers (>= 1)")
  add("--width", int, "N", "model width (a multiple of --heads)")
  add("--heads", int, "N", "attention heads (>= 1)")
  add("--pretrain-steps", int, "N", "source-task pretraining steps (>= 1)")
  add("--pretrain-batch", int, "N", "pretraining batch size (>= 1)")
  add("--pretrain-lr", float, "X", "pretraining peak learning rate (> 0)")
  add("--samples", int, "N", "target-task training samples (>= --batch)")
  add("--steps", int, "N", "fine-tuning steps per run (>= 1)")
  add("--batch", int, "N", "fine-tuning batch size (1 .. --samples)")
  add("--lr", float, "X", "fine-tuning peak learning rate of the top layer and head (> 0)")
  add("--warmup", float, "X", "warmup fraction of each run's steps, in [0, 1)")
  add("--weight-decay", float, "X", "decoupled weight decay on kernels (>= 0)")
  add("--eval-samples", int, "N", "held-out sequences per task (>= 1)")
  p.add_argument("--small", action="store_true",
                 help="a tiny setting for tests (2 layers, width 32, 2 seeds, few steps)")
  p.add_argument("--quiet", action="store_true",
                 help="no progress lines (one a phase and seed, with elapsed time, on stderr)")
  p.add_argument("--unfreeze", action="store_true",
                 help="also run each decay with gradual unfreezing and with a backbone ramp, "
                 "and show each layer group's lr ratio over the steps")
  p.add_argument("--plot", metavar="FILE", default=None,
                 help="with --unfreeze: save a plot of the lr ratios over the steps "
                 "(needs matplotlib)")
  p.set_defaults(**DEFAULTS)
  return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """Parses and checks the flags (``parser.error``, exit code 2, on a bad value)."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.small:  # SMALL replaces the defaults; flags given explicitly still win.
    parser.set_defaults(**SMALL)
    args = parser.parse_args(argv)

  def positive_int(flag, value):
    if value < 1:
      parser.error(f"{flag} must be >= 1, got {value}")

  for flag in ("seeds", "layers", "width", "heads", "pretrain_steps", "pretrain_batch",
               "samples", "steps", "batch", "eval_samples"):
    positive_int("--" + flag.replace("_", "-"), getattr(args, flag))
  for flag in ("pretrain_lr", "lr"):
    value = getattr(args, flag)
    if not (math.isfinite(value) and value > 0):
      parser.error(f"--{flag.replace('_', '-')} must be a finite number > 0, got {value}")
  if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
    parser.error(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
  if not (0 <= args.warmup < 1):
    parser.error(f"--warmup must be a fraction in [0, 1), got {args.warmup}")
  if args.width % args.heads:
    parser.error(f"--width ({args.width}) must be a multiple of --heads ({args.heads})")
  if args.batch > args.samples:
    parser.error(f"--batch ({args.batch}) must be <= --samples ({args.samples})")
  try:
    decays = [float(d) for d in args.decays.split(",")]
  except ValueError:
    parser.error(f"--decays must be comma-separated numbers in (0, 1], got {args.decays!r}")
  bad = [d for d in decays if not (0 < d <= 1)]
  if bad:
    parser.error(f"--decays must be in (0, 1], got {bad} in {args.decays!r}")
  if len(set(decays)) != len(decays):
    parser.error(f"--decays has a repeated value: {args.decays!r}")
  args.decays = decays
  if args.plot is not None:
    if not args.unfreeze:
      parser.error("--plot draws the lr ratios of --unfreeze: add --unfreeze")
    try:
      import matplotlib  # noqa: F401, PLC0415 - optional, only for --plot.
    except ImportError:
      parser.error("--plot needs matplotlib (pip install matplotlib)")
  return args


def schedules(args: argparse.Namespace) -> dict[str, optax_ldl.LayerSchedule]:
  """The layer schedules of ``--unfreeze``, in fine-tuning steps (see the module docstring)."""
  every, span, start = _schedule_steps(args)
  return {"unfreeze": optax_ldl.gradual_unfreezing(every),
          "ramp": optax_ldl.backbone_ramp(span, start=start)}


def _schedule_steps(args: argparse.Namespace) -> tuple[int, int, int]:
  """(steps between two groups' starts, the ramp's span, the ramp's start)."""
  return max(1, args.steps // (args.layers + 2)), max(1, args.steps // 4), args.steps // 10


def plot_steps(args: argparse.Namespace) -> list[int]:
  """The steps where a ratio of ``schedules(args)`` changes slope, and the first and last.

  Each ratio is linear in between (0 before a start, a linear ramp, constant after), so
  a line through its values at these steps is its curve, from a few ``describe`` calls.
  """
  every, span, start = _schedule_steps(args)
  breaks = {0, args.steps - 1, start - 1, start + span - 1}
  for k in range(1, args.layers + 3):
    breaks |= {k * every - 1, k * every}
  return sorted(t for t in breaks if 0 <= t < args.steps)


def variants(args: argparse.Namespace) -> dict[Any, tuple[float, Any]]:
  """What is compared: ``{key: (decay, layer schedule or None)}``.

  The keys are the decays; with ``--unfreeze``, labels: ``"0.75"``, ``"0.75+unfreeze"``,
  ``"0.75+ramp"`` for each decay.
  """
  if not args.unfreeze:
    return {d: (d, None) for d in args.decays}
  out: dict[Any, tuple[float, Any]] = {}
  for d in args.decays:
    out[f"{d:g}"] = (d, None)
    out.update({f"{d:g}+{kind}": (d, s) for kind, s in schedules(args).items()})
  return out


def _name(key: Any) -> str:
  return f"{key:g}" if isinstance(key, float) else str(key)


def ratio_steps(steps: int) -> list[int]:
  """The steps at which ``--unfreeze`` shows the ratios: 0, each quarter, the last."""
  return sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})


def ratios_over_steps(backbone: Any, config: dict[str, Any], schedule: Any,
                      steps: Sequence[int]) -> dict[str, list[float]]:
  """``{layer group: [its lr ratio at each step]}``, read from ``describe(..., step=t)``."""
  out: dict[str, list[float]] = {}
  for t in steps:
    seen: set[str] = set()
    for row in optax_ldl.describe(backbone, **config, layer_schedule=schedule, step=t).rows:
      group = str(row.layer)
      if group not in seen:
        seen.add(group)
        out.setdefault(group, []).append(float(row.lr_ratio))  # pyright: ignore[reportArgumentType]
  return out


def plot_ratios(path: str, curves: dict[str, dict[str, list[float]]], steps: list[int]) -> None:
  """Saves one panel per scheduled variant: each layer group's lr ratio at ``steps``."""
  import matplotlib  # noqa: PLC0415 - optional, only for --plot.

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.2), sharey=True,
                           squeeze=False)
  for ax, (label, groups) in zip(axes[0], curves.items()):
    for group, values in groups.items():
      ax.plot(steps, values, label=group)
    ax.set(title=f"decay {label}", xlabel="step")
  axes[0][0].set_ylabel("lr ratio")
  axes[0][-1].legend(title="layer group", fontsize="small")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the demo; prints the report and returns its numbers.

  Returns:
    ``{"pretrained_source_acc": float, "runs": {decay: [per-seed dict]}}``, each
    per-seed dict holding ``target_acc``, ``target_loss``, ``source_acc`` and
    ``drift`` (``{layer: relative drift}``). With ``--unfreeze`` the keys of
    ``runs`` are labels (:func:`variants`): ``"0.75"``, ``"0.75+unfreeze"``, ...
  """
  args = parse_args(argv)
  progress = Progress(enabled=not args.quiet)
  what = " x 3 layer schedules (none, unfreeze, ramp)" if args.unfreeze else ""
  progress(f"starting: pretrain, then fine-tune {len(args.decays)} decays{what} x {args.seeds} "
           "seeds (progress on stderr; --quiet turns it off)")
  t_start = time.perf_counter()
  n_layers = args.layers
  print(f"optax_ldl {optax_ldl.__version__}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; {n_layers} layers, width {args.width}; target task: "
        f"{args.samples} samples, {args.steps} steps; seeds {args.seeds}\n")

  model = Model(n_layers=n_layers, width=args.width, heads=args.heads)
  progress(f"pretraining: {args.pretrain_steps} steps (the first compiles the model)")
  pretrained, t_pretrain = pretrain(args, model, progress)
  source_x, source_y = source_data(args.eval_samples, seed=2)
  target_x, target_y = target_data(args.eval_samples, seed=3)

  @jax.jit
  def evaluate(params):
    """(source accuracy, target loss, target accuracy) on the held-out sets."""
    source_logits = model.apply({"params": params}, source_x)[0]
    target_logits = model.apply({"params": params}, target_x)[1]
    return _loss(source_logits, source_y)[1], *_loss(target_logits, target_y)

  source_acc0 = float(evaluate(pretrained)[0])
  progress(f"pretrained in {t_pretrain:.1f} s, source accuracy {source_acc0:.3f}")
  print(f"pretrained on the source task: {args.pretrain_steps} steps in {t_pretrain:.1f} s, "
        f"source accuracy {source_acc0:.3f}\n")

  frozen = {"source_head": pretrained["source_head"]}
  backbone = {k: v for k, v in pretrained.items() if k != "source_head"}
  configs: dict[float, dict[str, Any]] = {
      d: dict(learning_rate=_warmup_linear(args.lr, args.steps, args.warmup),
              weight_decay=args.weight_decay, layerwise_decay=d, n_layers=n_layers,
              apply_decay_param_fun=apply_weight_decay)
      for d in args.decays
  }

  # The lr of each layer group, from describe().
  ratios: dict[float, dict[str, Any]] = {}  # decay -> group (as printed) -> lr ratio
  for d, config in configs.items():
    ratios[d] = {}
    for row in optax_ldl.describe(backbone, **config).rows:
      ratios[d].setdefault(str(row.layer), row.lr_ratio)
  groups = [g.layer for g in layer_drift(backbone, backbone, **configs[args.decays[0]]).groups]
  print("== peak learning rate per layer group (describe: lr * decay ** (L - i)) ==")
  _table(["group"] + [f"decay {d:g}" for d in args.decays],
         [[str(g)] + [f"{args.lr * ratios[d][str(g)]:.3e}" for d in args.decays] for g in groups])

  compared = variants(args)
  if args.unfreeze:
    _show_schedules(args, backbone, configs, compared, groups)

  runs: dict[Any, list[dict[str, Any]]] = {}
  init_head = jax.jit(nn.Dense(2).init)  # the target head, re-initialised for every seed.
  t_finetune = time.perf_counter()
  for key, (d, schedule) in compared.items():
    config = configs[d]
    progress(f"fine-tuning with decay {_name(key)}: {args.seeds} seeds x {args.steps} steps")
    tx = optax_ldl.adamwdl(**config, layer_schedule=schedule)
    step = _make_step(model, tx, task=1)  # compiled once per variant, reused for every seed.
    init_opt = jax.jit(tx.init)
    runs[key] = []
    for seed in range(args.seeds):
      x, y = target_data(args.samples, seed=100 + seed)
      fresh = init_head(jax.random.key(100 + seed), jnp.zeros((1, args.width)))["params"]
      params0 = {**backbone, "target_head": fresh}
      params, opt_state = params0, init_opt(params0)
      rng = np.random.default_rng(seed)
      t_run = time.perf_counter()
      for _ in range(args.steps):
        idx = rng.choice(args.samples, args.batch, replace=False)
        params, opt_state, _ = step(params, opt_state, frozen, x[idx], y[idx])
      source_acc, target_loss, target_acc = map(float, evaluate({**params, **frozen}))
      runs[key].append(dict(
          target_acc=target_acc, target_loss=target_loss, source_acc=source_acc,
          drift=layer_drift(params0, params, **config).to_dict()))
      progress(f"fine-tuned decay {_name(key)}, seed {seed + 1}/{args.seeds}: target accuracy "
               f"{target_acc:.3f} ({time.perf_counter() - t_run:.1f} s)")
  t_finetune = time.perf_counter() - t_finetune

  print(f"\n== relative drift from the pretrained weights, ||Δθ|| / ||θ0|| (layer_drift), "
        f"mean ± std over {args.seeds} seeds ==")
  _table(["group"] + [f"decay {_name(k)}" for k in runs],
         [[str(g)] + [mean_std([r["drift"][g] for r in runs[k]]) for k in runs]
          for g in groups])
  head_group = next(r.layer for r in optax_ldl.describe(backbone, **configs[args.decays[0]]).rows
                    if r.path.startswith("target_head"))
  print(f"({head_group!r} holds the final norm and the new target head, whose drift is "
        "measured from its random init)")

  print(f"\n== results on {args.eval_samples} held-out sequences per task, mean ± std over "
        f"{args.seeds} seeds ==")
  _table(["decay", "target acc", "target loss", "source retention"],
         [[_name(k), mean_std([r["target_acc"] for r in runs[k]]),
           mean_std([r["target_loss"] for r in runs[k]]),
           mean_std([r["source_acc"] for r in runs[k]])] for k in runs])
  print(f"(source retention: source-task accuracy after fine-tuning, read with the frozen "
        f"pretrained source head; {source_acc0:.3f} before fine-tuning)")
  print("\nper seed (target acc / source retention):")
  for k in runs:
    cells = "  ".join(f"{r['target_acc']:.3f}/{r['source_acc']:.3f}" for r in runs[k])
    print(f"  decay {_name(k)}: {cells}")
  compared_what = (f"{len(args.decays)} decays" if not args.unfreeze else
                   f"{len(runs)} variants ({len(args.decays)} decays x 3)")
  print(f"\npretraining {t_pretrain:.1f} s, fine-tuning {compared_what} x "
        f"{args.seeds} seeds {t_finetune:.1f} s, total {time.perf_counter() - t_start:.1f} s")
  progress("done")
  return {"pretrained_source_acc": source_acc0, "runs": runs}


def _show_schedules(args: argparse.Namespace, backbone: Any, configs: dict[float, Any],
                    compared: dict[Any, tuple[float, Any]], groups: list[Any]) -> None:
  """Prints (and with ``--plot`` draws) each layer group's lr ratio over the steps."""
  shown = ratio_steps(args.steps)
  scheduled = {k: v for k, v in compared.items() if v[1] is not None}
  print(f"\n== lr ratio per layer group over the {args.steps} fine-tuning steps "
        "(describe(..., layer_schedule=..., step=t)) ==")
  for kind, s in schedules(args).items():
    print(f"{kind}: {s}")
  for key, (d, schedule) in scheduled.items():
    ratios = ratios_over_steps(backbone, configs[d], schedule, shown)
    print(f"\n-- decay {_name(key)} --")
    _table(["group"] + [f"step {t}" for t in shown],
           [[str(g)] + [f"{x:.4g}" for x in ratios[str(g)]] for g in groups])
  if args.plot is not None:
    at = plot_steps(args)
    plot_ratios(args.plot, {_name(k): ratios_over_steps(backbone, configs[d], s, at)
                            for k, (d, s) in scheduled.items()}, at)
    print(f"\n(plot saved to {args.plot})")
  print()


def _table(header: list[str], rows: list[list[str]]) -> None:
  widths = [max(len(x) for x in col) for col in zip(header, *rows)]
  for cells in [header, ["-" * w for w in widths], *rows]:
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(cells, widths))).rstrip())


if __name__ == "__main__":
  main()
