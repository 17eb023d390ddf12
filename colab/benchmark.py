# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     name: benchmark.ipynb
#     provenance: []
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Benchmark: `adamwdl` vs `optax.adamw`
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/optax-ldl/optax_ldl/blob/main/colab/benchmark.ipynb)
#
# The time of one optimizer step (`tx.update` + `optax.apply_updates`, jitted) on a
# BERT-base-shaped parameter tree, on whatever accelerator this runtime has (in Colab:
# *Runtime > Change runtime type* for a GPU or TPU). `adamwdl` is `optax.adamw` plus one
# multiply per group of parameters that share a learning-rate ratio, so after XLA fuses the
# elementwise work both should take about the same time. Runtime: a few minutes on a CPU,
# under a minute on a GPU; about a minute with `OPTAX_LDL_NB_SMALL=1` (what CI runs).
#
# **The outputs stored in this notebook are from that small setting** (a 2-layer, 64-wide
# tree): they show what the notebook prints and plots; its ratios mean nothing. The measured
# numbers are on the docs' benchmarks page.

# %%
# Installs the packages in Colab only; elsewhere (a local Jupyter, CI) it uses what
# `pip install "optax_ldl[notebooks]"` installed, and touches nothing.
import os
import subprocess
import sys

REPO_URL = "https://github.com/optax-ldl/optax_ldl"  # working from a fork? change this line
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
  packages = [f"git+{REPO_URL}", "matplotlib"]
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
else:
  print("Not in Colab: using the installed packages.")

# OPTAX_LDL_NB_SMALL=1 (set by tests/test_notebooks.py) shrinks the model so the notebook
# runs in seconds on a CPU; unset, you get the full benchmark.
SMALL = os.environ.get("OPTAX_LDL_NB_SMALL", "0") == "1"
print("SMALL =", SMALL)

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import optax_ldl

plt.rcParams["figure.dpi"] = 72  # keeps the figures stored in the notebook small
print("jax", jax.__version__, "| optax", optax.__version__, "| optax_ldl", optax_ldl.__version__)
print("backend:", jax.default_backend(), "| devices:", jax.devices())

# %% [markdown]
# ## A BERT-base-shaped parameter tree
#
# 12 layers, hidden size 768, vocabulary 30522: about 110M parameters, named like the
# Hugging Face Flax BERT (`embeddings/...`, `encoder/layer/N/...`), which the default layer
# rule reads. The small setting (CI) uses 2 layers of size 64.

# %%
N_LAYERS, HIDDEN, VOCAB = (2, 64, 1000) if SMALL else (12, 768, 30522)
REPEATS = 5 if SMALL else 50


def bert_like(n_layers, hidden, vocab, key):
  keys = iter(jax.random.split(key, 16 * n_layers + 8))

  def w(*shape):
    return 0.02 * jax.random.normal(next(keys), shape, jnp.float32)

  def dense(n_in, n_out):
    return {"kernel": w(n_in, n_out), "bias": jnp.zeros(n_out)}

  def norm():
    return {"scale": jnp.ones(hidden), "bias": jnp.zeros(hidden)}

  def layer():
    return {
        "attention": {"self": {k: dense(hidden, hidden) for k in ("query", "key", "value")},
                      "output": {"dense": dense(hidden, hidden), "LayerNorm": norm()}},
        "intermediate": {"dense": dense(hidden, 4 * hidden)},
        "output": {"dense": dense(4 * hidden, hidden), "LayerNorm": norm()},
    }

  return {
      "embeddings": {"word_embeddings": {"embedding": w(vocab, hidden)},
                     "position_embeddings": {"embedding": w(512, hidden)},
                     "token_type_embeddings": {"embedding": w(2, hidden)},
                     "LayerNorm": norm()},
      "encoder": {"layer": {str(i): layer() for i in range(n_layers)}},
      "pooler": {"dense": dense(hidden, hidden)},
      "classifier": dense(hidden, 2),
  }


def apply_decay(name):
  return not {"bias", "scale"} & set(name.split("/"))


params = bert_like(N_LAYERS, HIDDEN, VOCAB, jax.random.key(0))
grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
mask = jax.tree_util.tree_map_with_path(
    lambda path, _: apply_decay(jax.tree_util.keystr(path, simple=True, separator="/")), params)
print(f"{sum(x.size for x in jax.tree.leaves(params)):,} parameters in "
      f"{len(jax.tree.leaves(params))} arrays")

# %% [markdown]
# ## Correctness first
#
# With `layerwise_decay=1.0` every ratio is 1 and `adamwdl` is AdamW: a few steps of each
# give the same parameters.

# %%
def run_steps(tx, n=3):
  p, state = params, tx.init(params)
  for _ in range(n):
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  return p


a = run_steps(optax.adamw(1e-3, weight_decay=0.01, mask=mask))
b = run_steps(optax_ldl.adamwdl(1e-3, weight_decay=0.01, layerwise_decay=1.0,
                                n_layers=N_LAYERS, apply_decay_param_fun=apply_decay))
pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
diff = max(float(jnp.abs(x - y).max()) for x, y in pairs)
print("max |adamw - adamwdl(decay=1.0)| =", diff)
assert diff < 1e-6

# %% [markdown]
# ## Step time
#
# Each optimizer is jitted as `update + apply_updates` and called with the same params,
# gradients and state every time, with donation off so that each call does the full work.
# The time is the median of `REPEATS` calls, each waited for with `block_until_ready`.

# %%
schedule = optax_ldl.inverse_sqrt_schedule(4000, 1e-3)
common = dict(weight_decay=0.01, n_layers=N_LAYERS, apply_decay_param_fun=apply_decay)
optimizers = {
    "optax.adamw": optax.adamw(1e-3, weight_decay=0.01, mask=mask),
    "adamwdl decay=1.0": optax_ldl.adamwdl(1e-3, layerwise_decay=1.0, **common),
    "adamwdl decay=0.75": optax_ldl.adamwdl(1e-3, layerwise_decay=0.75, **common),
    "adamwdl decay=0.75 + inverse_sqrt": optax_ldl.adamwdl(schedule, layerwise_decay=0.75,
                                                          **common),
    "adamwdl decay=0.75 lazy_mode": optax_ldl.adamwdl(1e-3, layerwise_decay=0.75,
                                                     lazy_mode=True, **common),
}


def time_step(tx):
  @jax.jit
  def step(p, state, g):
    updates, state = tx.update(g, state, p)
    return optax.apply_updates(p, updates), state

  state = tx.init(params)
  start = time.perf_counter()
  jax.block_until_ready(step(params, state, grads))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    jax.block_until_ready(step(params, state, grads))
    times.append(time.perf_counter() - start)
  return compile_s, 1e3 * np.median(times), 1e3 * np.min(times)


results = {name: time_step(tx) for name, tx in optimizers.items()}
base = results["optax.adamw"][1]
print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); "
      f"{N_LAYERS} layers, hidden {HIDDEN}")
if SMALL:
  print("CAVEAT: small setting (a 2-layer, 64-wide tree, 5 repeats): each step takes "
        "microseconds, so the ratios below are dispatch overhead and noise, not a measure of "
        "adamwdl's cost. Run with OPTAX_LDL_NB_SMALL unset for meaningful ratios.")
print(f"{'optimizer':<36}{'compile s':>10}{'median ms':>11}{'min ms':>9}{'vs adamw':>10}")
for name, (compile_s, median, best) in results.items():
  print(f"{name:<36}{compile_s:>10.2f}{median:>11.3f}{best:>9.3f}{median / base:>9.2f}x")

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
names = list(results)
ax.barh(names, [results[n][1] for n in names])
ax.invert_yaxis()
ax.set_xlabel("median step time (ms)")
title = f"optimizer step, {jax.devices()[0].device_kind}"
ax.set_title(title + (" (small setting: not meaningful)" if SMALL else ""))
plt.tight_layout()
plt.show()

# %% [markdown]
# `lazy_mode` (Paddle's lazy Adam on dense gradients) adds a row mask per 2-D parameter and
# two `where`s on the moments; the other `adamwdl` variants should be within noise of
# `optax.adamw`. The benchmark of record (BERT-base and BERT-large, unrolled and scanned,
# alternated runs) is `python benchmarks/run.py`; its numbers are on the docs' benchmarks page.
