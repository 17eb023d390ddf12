# ---
# jupyter:
#   colab:
#     name: quickstart.ipynb
#     provenance: []
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # optax_ldl quickstart: fine-tune a pretrained transformer with layer-wise lr decay
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-ldl/optax_ldl/blob/main/colab/quickstart.ipynb)
#
# `optax_ldl.adamwdl` is PaddleNLP's `AdamWDL` as an Optax transformation: AdamW in which
# each parameter's learning rate is multiplied by a ratio that depends on its transformer
# layer, `decay ** (n_layers - i)` for layer `i`, `decay ** (n_layers + 1)` for the
# embeddings and `1` for everything else (head, final norm). Lower layers move less.
#
# Layer-wise decay is a *fine-tuning* method: the lower layers of a pretrained model hold its
# most general features, so they get the smallest learning rate. This notebook therefore
# uses the setting of `python -m optax_ldl.demo` (nothing is downloaded):
#
# 1. **pretrain** a small transformer on a token-tagging *source* task;
# 2. show what `adamwdl` will do to each of its parameters (`describe`) and plot the
#    per-layer learning rates;
# 3. **fine-tune** it on a few samples of a *target* task with a new head, with
#    `layerwise_decay` 1.0 (plain AdamW), 0.9, 0.75 and 0.6, three seeds each, and plot the
#    accuracy, how much of the source skill survives, and how far each layer moved.
#
# **Runtime**, measured on 2 CPU cores shared with other jobs (an idle machine is faster):
# 1.8 to 4.4 minutes for the full run (what Colab runs; the stored outputs are from it), 1 minute
# with `OPTAX_LDL_NB_SMALL=1` (what CI runs: 2 layers, 2 seeds, 20 steps, numbers that mean
# nothing).

# %%
# Installs the packages in Colab only; elsewhere (a local Jupyter, CI) it uses what
# `pip install ".[notebooks]"` installed, and touches nothing.
import os
import subprocess
import sys

REPO_URL = "https://github.com/optax-ldl/optax_ldl"  # working from a fork? change this line
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
  packages = [f"optax_ldl[demo] @ git+{REPO_URL}", "matplotlib"]
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
else:
  print("Not in Colab: using the installed packages.")

# OPTAX_LDL_NB_SMALL=1 (set by tests/test_notebooks.py) shrinks the model, the data and the
# steps so the notebook runs in seconds on a CPU; unset, you get the full run.
SMALL = os.environ.get("OPTAX_LDL_NB_SMALL", "0") == "1"
print("SMALL =", SMALL)

# %%
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import optax_ldl
from optax_ldl import demo

plt.rcParams["figure.dpi"] = 72  # keeps the figures stored in the notebook small
print("jax", jax.__version__, "| optax", optax.__version__, "| optax_ldl", optax_ldl.__version__)
print("devices:", jax.devices())

# %% [markdown]
# ## 1. Pretrain
#
# `demo.Model` is a pre-norm transformer: embeddings `word_embeddings` and
# `position_embeddings`, blocks `layers_0`, `layers_1`, ..., a final norm and two heads. Its
# source task: every token has a hidden colour, and the first token of a sequence (the
# *dialect*) shifts all colours by 2; the model tags each token with its colour in context,
# which needs attention (the dialect sits at position 0) and work in the lower layers.
# `demo.pretrain` trains it with AdamW for `pretrain_steps` steps.

# %%
DECAYS = (1.0, 0.9, 0.75, 0.6)
args = demo.parse_args(["--decays", ",".join(map(str, DECAYS))]
                       + (["--small"] if SMALL else ["--seeds", "3"]))
print({k: v for k, v in vars(args).items() if k not in ("small", "quiet")})

start = time.perf_counter()
model = demo.Model(n_layers=args.layers, width=args.width, heads=args.heads)
pretrained, seconds = demo.pretrain(args, model)
source_x, source_y = demo.source_data(args.eval_samples, seed=2)
target_x, target_y = demo.target_data(args.eval_samples, seed=3)


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)


@jax.jit
def evaluate(params):
  """Source-task accuracy, target-task accuracy and loss on the held-out sequences."""
  source_logits = model.apply({"params": params}, source_x)[0]
  target_logits = model.apply({"params": params}, target_x)[1]
  target_loss = optax.softmax_cross_entropy_with_integer_labels(target_logits, target_y).mean()
  return accuracy(source_logits, source_y), accuracy(target_logits, target_y), target_loss


source_acc0 = float(evaluate(pretrained)[0])
print(f"pretrained in {seconds:.1f} s: source-task accuracy {source_acc0:.3f}")

# %% [markdown]
# ## 2. What the optimizer will do: `describe`
#
# The target task: is a sequence's count of colour-0 tokens larger than its count of colour-1
# tokens? A new, randomly initialised `target_head` reads it from the mean-pooled output; the
# pretrained `source_head` is frozen (it is kept only to measure, after fine-tuning, how much
# of the source skill survived).
#
# The fine-tuning recipe is BERT's: linear warmup over 10% of the steps then linear decay to
# 0, weight decay 0.01 on kernels only (`demo.apply_weight_decay`, the recommended
# `optax_ldl.weight_decay_filter` with the embeddings exempt). `describe` takes the same
# keyword arguments as `adamwdl` and shows, for every parameter, its layer, its lr ratio, its
# learning rate (read here at `step=warmup`, where the schedule peaks) and whether weight
# decay applies.

# %%
frozen = {"source_head": pretrained["source_head"]}
backbone = {k: v for k, v in pretrained.items() if k != "source_head"}
warmup = max(1, round(args.warmup * args.steps))
schedule = optax.join_schedules(
    [optax.linear_schedule(0.0, args.lr, warmup),
     optax.linear_schedule(args.lr, 0.0, args.steps - warmup)], [warmup])


def config(decay):
  """The keyword arguments of adamwdl (and of describe and layer_drift) for one decay."""
  return dict(learning_rate=schedule, weight_decay=args.weight_decay, layerwise_decay=decay,
              n_layers=args.layers, apply_decay_param_fun=demo.apply_weight_decay)


init_head = jax.jit(nn.Dense(2).init)  # the new head: Dense(2) on the mean-pooled output


def head_params(seed):
  return init_head(jax.random.key(seed), jnp.zeros((1, args.width)))["params"]


params0 = {**backbone, "target_head": head_params(100)}
description = optax_ldl.describe(params0, step=warmup, **config(0.75))
print(description.summary(), end="\n\n")  # one line per layer group
print(description)  # one line per parameter

# %% [markdown]
# ## Per-layer learning rates
#
# Left: the lr ratio of each layer group for each decay (from `describe(...).rows`). Right:
# the learning rate each group gets over the fine-tuning steps with `layerwise_decay=0.75`:
# the schedule times the group's ratio.

# %%
def ratios(decay):
  """Layer group (as describe shows it: "embedding", "0", "1", ..., "head") -> lr ratio."""
  return {row.layer: row.lr_ratio for row in optax_ldl.describe(params0, **config(decay)).rows}


groups = ["embedding", *map(str, range(args.layers)), "head"]
labels = ["embed", *(f"layer {i}" for i in range(args.layers)), "head"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
for decay in DECAYS:
  ratio = ratios(decay)
  ax1.plot(labels, [ratio[g] for g in groups], "o-", label=f"decay={decay}")
ax1.set_ylim(0, 1.05)
ax1.set_ylabel("lr ratio")
ax1.set_title("layer-wise lr ratio: decay ** (n_layers - i)")
ax1.legend()

steps = np.arange(args.steps + 1)
lrs = np.asarray(jax.vmap(schedule)(steps))
ratio = ratios(0.75)
for g, label in reversed(list(zip(groups, labels))):
  ax2.plot(steps, lrs * ratio[g], label=f"{label} (x{ratio[g]:.3g})")
ax2.set_xlabel("fine-tuning step")
ax2.set_ylabel("learning rate")
ax2.set_title("lr per group, layerwise_decay=0.75")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Fine-tune: `adamwdl` at several decays against decay 1.0
#
# For each decay and seed: a fresh target head, `args.samples` training sequences drawn by the
# seed, `args.steps` steps of `adamwdl`. The step is jitted once per decay and reused for
# every seed. Decay 1.0 is plain AdamW (every ratio is 1).

# %%
def loss_fn(params, x, y):
  logits = model.apply({"params": {**params, **frozen}}, x)[1]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# track_layer_metrics measures each layer group's update every METRICS_EVERY steps (in the
# optimizer state; the other steps cost nothing extra): the update/weight ratio plot below.
METRICS_EVERY = max(1, args.steps // 25)


def metric_key(group):  # describe's "embedding", "0", "1", ..., "head" -> layer_metrics' group
  return f"layer_{group}" if group.isdigit() else group


runs = {}  # decay -> one dict per seed
for decay in DECAYS:
  tx = optax_ldl.track_layer_metrics(optax_ldl.adamwdl(**config(decay)),
                                     optax_ldl.describe(params0, **config(decay)),
                                     every=METRICS_EVERY)

  @jax.jit
  def train_step(params, opt_state, x, y, tx=tx):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  runs[decay] = []
  for seed in range(args.seeds):
    x, y = demo.target_data(args.samples, seed=100 + seed)
    params = start_params = {**backbone, "target_head": head_params(100 + seed)}
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    losses, measured = [], []
    for t in range(args.steps):
      idx = rng.choice(args.samples, args.batch, replace=False)
      params, opt_state, loss = train_step(params, opt_state, x[idx], y[idx])
      losses.append(loss)
      if t % METRICS_EVERY == 0:  # this step measured: read its metrics on the host
        metrics = jax.device_get(opt_state.layer_metrics)
        measured.append([metrics[f"{metric_key(g)}/update_param_ratio"] for g in groups])
    source_acc, target_acc, target_loss = map(float, evaluate({**params, **frozen}))
    drift = optax_ldl.layer_drift(start_params, params, **config(decay))
    runs[decay].append(dict(losses=np.asarray(losses), target_acc=target_acc,
                            target_loss=target_loss, source_acc=source_acc,
                            drift=drift.to_dict(), update_ratio=np.asarray(measured)))
  accs = [r["target_acc"] for r in runs[decay]]
  print(f"[{time.perf_counter() - start:5.1f} s] decay {decay}: target accuracy per seed "
        + ", ".join(f"{a:.3f}" for a in accs))

# %% [markdown]
# ## Results
#
# Mean ± sample standard deviation over the seeds, on held-out sequences. *Source retention*
# is the source task's accuracy after fine-tuning, read with the frozen pretrained source
# head: how much of the pretrained skill survived. *Drift* is `layer_drift`: how far each
# layer group moved from its pretrained weights, `||θ − θ0|| / ||θ0||` (the `head` group holds
# the final norm and the new head, whose drift is measured from its random init).

# %%
def mean_std(values):
  values = np.asarray(values)
  return values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0


print(f"{'decay':>6}  {'target acc':>14}  {'target loss':>14}  {'source retention':>16}")
for decay, rs in runs.items():
  cells = [mean_std([r[k] for r in rs]) for k in ("target_acc", "target_loss", "source_acc")]
  print(f"{decay:>6}  " + "  ".join(f"{m:.3f} ± {s:.3f}".rjust(w)
                                    for (m, s), w in zip(cells, (14, 14, 16))))
print(f"(source accuracy before fine-tuning: {source_acc0:.3f})")
print(f"total {time.perf_counter() - start:.0f} s on {jax.devices()[0].platform}")

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.6))
x = np.arange(len(DECAYS))
for offset, key, name in ((-0.2, "target_acc", "target accuracy"),
                          (0.2, "source_acc", "source retention")):
  stats = [mean_std([r[key] for r in runs[d]]) for d in DECAYS]
  ax1.bar(x + offset, [m for m, _ in stats], 0.4, yerr=[s for _, s in stats], capsize=3,
          label=name)
ax1.axhline(source_acc0, color="k", ls=":", lw=1, label="source acc. before")
ax1.set_xticks(x, [str(d) for d in DECAYS])
ax1.set_xlabel("layerwise_decay")
ax1.set_ylim(0, 1.05)
ax1.set_title("held-out accuracy, mean ± std")
ax1.legend(fontsize=8, loc="lower left")

for decay in DECAYS:
  # layer_drift's groups are describe's, with the layer indices as ints.
  stats = [mean_std([r["drift"][int(g) if g.isdigit() else g] for r in runs[decay]])
           for g in groups]
  ax2.errorbar(labels, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
               capsize=3, label=f"decay={decay}")
ax2.set_ylim(0, None)
ax2.set_ylabel("||θ − θ0|| / ||θ0||")
ax2.set_title("drift from the pretrained weights")
ax2.legend(fontsize=8)

for decay in DECAYS:
  curve = np.mean([r["losses"] for r in runs[decay]], axis=0)
  window = max(1, args.steps // 20)
  ax3.plot(np.convolve(curve, np.ones(window) / window, mode="valid"), label=f"decay={decay}")
ax3.set_xlabel("fine-tuning step")
ax3.set_ylabel("training loss (smoothed, mean over seeds)")
ax3.set_title("fine-tuning loss")
ax3.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Each layer's update/weight ratio during fine-tuning
#
# `track_layer_metrics` recorded, every `METRICS_EVERY` steps, each layer group's
# update RMS over its weight RMS: how big a step the optimizer takes relative to the
# weights. Left: decay 1.0 (plain AdamW); right: the smallest decay. Mean over the seeds,
# log scale; step 0 is left out (the warm-up starts the learning rate at 0, so nothing
# moves). With layer-wise decay the lower layers' lines sit below the top layer's, by
# about the ratio of their learning rates; without it they lie together.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
measured_steps = np.arange(0, args.steps, METRICS_EVERY)
for ax, decay in zip(axes, (1.0, min(DECAYS))):
  curve = np.mean([r["update_ratio"] for r in runs[decay]], axis=0)  # (time, group)
  for j, label in enumerate(labels):
    ax.plot(measured_steps[1:], curve[1:, j], label=label)
  ax.set_yscale("log")
  ax.set_xlabel("fine-tuning step")
  ax.set_title(f"layerwise_decay={decay}")
axes[0].set_ylabel("update RMS / weight RMS")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reading the results
#
# * **Drift**: the smaller the decay, the less the embeddings and the lower layers move from
#   their pretrained weights, while the top layer moves as much or more: what layer-wise
#   decay promises.
# * **Update/weight ratio**: the drift's cause, step by step. Without decay the blocks take
#   steps of about the same size relative to their weights; with decay 0.6 each block's
#   steps are roughly 0.6 times those of the block above it, the embeddings' the smallest.
#   The new head is not decayed: its ratio is about the same in both panels.
# * **Accuracy and retention**: compare the means with their spread; with three seeds a
#   difference smaller than about two standard deviations is not evidence either way. In the
#   stored full run (64 training samples), every decay below 1.0 did better than plain AdamW,
#   the smaller the better down to 0.6: target accuracy 0.80 ± 0.03 at decay 1.0 against
#   0.92 ± 0.01 at 0.6, and the source skill kept (0.86 against 1.00). Plain AdamW moves the
#   embeddings most and overwrites what pretraining put there; on few samples, keeping the
#   lower layers near their pretrained values is the better prior. It is a prior, not a free
#   gain: with plenty of data, or a target task that needs new low-level features, a decay
#   that is too small starves the layers that must adapt (`finetune_minilm.ipynb` shows such
#   a case). `python -m optax_ldl.demo --decays 1.0,0.75 --seeds 10` runs this experiment
#   from the command line.
#
# ## Next
#
# * `finetune_minilm.ipynb`: fine-tune the pretrained MiniLM (a 6-layer BERT) with the same
#   decays over five seeds and two data sizes.
# * `benchmark.ipynb`: step time of `adamwdl` vs `optax.adamw`.
