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
# # optax_ldl quickstart: AdamW with layer-wise learning-rate decay
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-ldl/optax_ldl/blob/main/colab/quickstart.ipynb)
#
# `optax_ldl.adamwdl` is PaddleNLP's `AdamWDL` as an Optax transformation: AdamW in which
# each parameter's learning rate is multiplied by a ratio that depends on its transformer
# layer, `decay ** (n_layers - i)` for layer `i`, `decay ** (n_layers + 1)` for the
# embeddings and `1` for everything else (head, final norm). Lower layers move less.
#
# This notebook builds `adamwdl` for a small Flax transformer, prints what it will do to
# every parameter with `optax_ldl.describe`, plots the per-layer learning rates and the
# inverse-square-root schedule, and trains the model for a short while. Runtime: about a
# minute on a CPU.

# %%
# Installs the packages in Colab only; elsewhere (a local Jupyter, CI) it uses what
# `pip install "optax_ldl[notebooks]"` installed, and touches nothing.
import os
import subprocess
import sys

REPO_URL = "https://github.com/optax-ldl/optax_ldl"  # working from a fork? change this line
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
  packages = [f"git+{REPO_URL}", "tqdm", "matplotlib"]
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
else:
  print("Not in Colab: using the installed packages.")

# OPTAX_LDL_NB_SMALL=1 (set by tests/test_notebooks.py) shrinks data and steps so the
# notebook runs in seconds on a CPU; unset, you get the full run.
SMALL = os.environ.get("OPTAX_LDL_NB_SMALL", "0") == "1"
print("SMALL =", SMALL)

# %%
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

import optax_ldl

print("jax", jax.__version__, "| optax", optax.__version__, "| optax_ldl", optax_ldl.__version__)
print("devices:", jax.devices())

# %% [markdown]
# ## A small transformer
#
# A causal transformer language model. Its blocks are named `layers_0`, `layers_1`, ...
# and its embeddings `tok_embed` / `pos_embed`: the default layer rule of `adamwdl`
# recognises these names (the docs' "layer rule" page lists all the names it reads).

# %%
VOCAB, SEQ_LEN, D_MODEL, N_HEADS, N_LAYERS = 32, 24, 64, 4, 4
STEPS = 60 if SMALL else 600
BATCH = 32 if SMALL else 128


class Block(nn.Module):
  d_model: int
  n_heads: int

  @nn.compact
  def __call__(self, x):
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
    h = nn.LayerNorm(name="ln_attn")(x)
    x = x + nn.MultiHeadDotProductAttention(self.n_heads, name="attn")(h, h, mask=mask)
    h = nn.LayerNorm(name="ln_mlp")(x)
    h = nn.gelu(nn.Dense(4 * self.d_model, name="mlp_in")(h))
    return x + nn.Dense(self.d_model, name="mlp_out")(h)


class TinyLM(nn.Module):
  vocab: int
  seq_len: int
  d_model: int
  n_heads: int
  n_layers: int

  @nn.compact
  def __call__(self, tokens):
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.seq_len, self.d_model))
    x = nn.Embed(self.vocab, self.d_model, name="tok_embed")(tokens) + pos[: tokens.shape[1]]
    for i in range(self.n_layers):
      x = Block(self.d_model, self.n_heads, name=f"layers_{i}")(x)
    x = nn.LayerNorm(name="ln_final")(x)
    return nn.Dense(self.vocab, name="head")(x)


model = TinyLM(VOCAB, SEQ_LEN, D_MODEL, N_HEADS, N_LAYERS)
params = model.init(jax.random.key(0), jnp.zeros((1, SEQ_LEN), jnp.int32))["params"]
print(f"{sum(x.size for x in jax.tree.leaves(params)):,} parameters")

# %% [markdown]
# ## What the optimizer will do: `describe`
#
# `describe` takes the same keyword arguments as `adamwdl` and shows, for every parameter,
# its layer, learning-rate ratio, learning rate and whether weight decay applies. Weight
# decay is switched off for biases and norm scales with Paddle's `apply_decay_param_fun`
# (a function of the parameter's path name; testing the path's `/`-separated keys works for
# Flax linen, NNX and Hugging Face names alike).

# %%
PEAK_LR, WARMUP = 3e-3, max(1, STEPS // 10)


def apply_decay(name):
  return not {"bias", "scale"} & set(name.split("/"))


config = dict(layerwise_decay=0.8, n_layers=N_LAYERS, weight_decay=0.01,
              apply_decay_param_fun=apply_decay)
print(optax_ldl.describe(params, learning_rate=PEAK_LR, **config))

# %% [markdown]
# ## Per-layer learning rates and the inverse-sqrt schedule
#
# Left: the lr ratio of each group for a few decay rates (`describe(...).rows` as data).
# Right: `inverse_sqrt_schedule` (linear warmup, then `peak * sqrt(warmup / step)`, exactly
# PaddleNLP's `InverseSquareRootSchedule`) and the learning rate that the embeddings, the
# first and last layers and the head actually get with `layerwise_decay=0.8`.

# %%
def ratios(decay):
  """Group -> lr ratio: layer i as the int i, then "embedding" and "head"."""
  rows = optax_ldl.describe(params, **{**config, "layerwise_decay": decay}).rows
  return {(int(row.layer) if row.layer.isdigit() else row.layer): row.lr_ratio
          for row in rows}


groups = ["embedding", *range(N_LAYERS), "head"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
for decay in (1.0, 0.9, 0.8, 0.65):
  ratio = ratios(decay)
  ax1.plot(range(len(groups)), [ratio[g] for g in groups], "o-", label=f"decay={decay}")
ax1.set_xticks(range(len(groups)), ["embed"] + [f"layer {i}" for i in range(N_LAYERS)] + ["head"])
ax1.set_ylim(0, 1.05)
ax1.set_ylabel("lr ratio")
ax1.set_title("layer-wise lr ratio")
ax1.legend()

schedule = optax_ldl.inverse_sqrt_schedule(WARMUP, PEAK_LR)
steps = np.arange(STEPS + 1)
lrs = np.asarray(jax.vmap(schedule)(steps))
ratio = ratios(config["layerwise_decay"])
ax2.plot(steps, lrs, "k", lw=2, label="schedule (head, ratio 1)")
for g, name in ((N_LAYERS - 1, f"layer {N_LAYERS - 1}"), (0, "layer 0"), ("embedding", "embed")):
  ax2.plot(steps, lrs * ratio[g], label=f"{name} (x{ratio[g]:.3g})")
ax2.set_xlabel("step")
ax2.set_ylabel("learning rate")
ax2.set_title(f"inverse_sqrt_schedule(warmup={WARMUP}, peak={PEAK_LR})")
ax2.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## A short training run
#
# The task: each sequence is an arithmetic progression modulo `VOCAB`,
# `x[t] = (a + d * t) % VOCAB` with random `a` and `d`. From the third token on, the next
# token is determined by the context, so the accuracy there can reach 100%. (A model trained
# from scratch, as here, gains nothing from layer-wise decay: it is a fine-tuning method. See
# `finetune_minilm.ipynb` for a pretrained model.)

# %%
def make_batch(rng, batch):
  a = rng.integers(0, VOCAB, (batch, 1))
  d = rng.integers(1, VOCAB, (batch, 1))
  return ((a + d * np.arange(SEQ_LEN + 1)) % VOCAB).astype(np.int32)


tx = optax_ldl.adamwdl(schedule, **config)
opt_state = tx.init(params)


def loss_and_acc(params, seq):
  logits = model.apply({"params": params}, seq[:, :-1])
  targets = seq[:, 1:]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)[:, 1:].mean()
  acc = (logits.argmax(-1) == targets)[:, 1:].mean()
  return loss, acc


@jax.jit
def train_step(params, opt_state, seq):
  (loss, acc), grads = jax.value_and_grad(loss_and_acc, has_aux=True)(params, seq)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss, acc


rng = np.random.default_rng(0)
history = []
with tqdm(range(STEPS), desc="training") as bar:
  for step in bar:
    params, opt_state, loss, acc = train_step(params, opt_state, make_batch(rng, BATCH))
    history.append((float(loss), float(acc)))
    if step % 10 == 0:
      bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(acc):.2f}")

losses, accs = np.array(history).T
test_loss, test_acc = loss_and_acc(params, make_batch(np.random.default_rng(1), 1024))
print(f"held-out: loss {float(test_loss):.4f}, next-token accuracy {float(test_acc):.3f}")
assert losses[-10:].mean() < losses[:10].mean(), "the loss did not go down"

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.5))
ax1.plot(losses)
ax1.set_xlabel("step")
ax1.set_ylabel("training loss")
ax1.set_yscale("log")
ax2.plot(accs)
ax2.set_ylim(0, 1)
ax2.set_xlabel("step")
ax2.set_ylabel("training accuracy")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Next
#
# * `finetune_minilm.ipynb`: fine-tune a pretrained MiniLM (BERT) with `layerwise_decay`
#   1.0, 0.9, 0.75 and 0.6 over several seeds and two data sizes, and measure how far each
#   layer moves.
# * `benchmark.ipynb`: step time of `adamwdl` vs `optax.adamw`.
