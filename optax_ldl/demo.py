"""The main job: fine-tune a small Flax transformer classifier with ``adamwdl`` on CPU.

    python -m optax_ldl.demo [--steps 300] [--layers 4] [--decay 0.75] [--seed 0]

The task is embedded (no download): sentences of random words from a vocabulary in
which some words are positive and some negative; the label is whether the positive
words outnumber the negative ones. It prints what the optimizer will do to every
parameter (``describe``), the learning rate of each layer group, then the training
and held-out loss and accuracy as training goes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import optax_ldl

VOCAB, SEQ_LEN, POLAR_WORDS = 64, 16, 12


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Sentences and labels: 1 when positive words (ids 1..12) outnumber negative (13..24)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, VOCAB, size=(n, SEQ_LEN))
  positive = np.sum((tokens >= 1) & (tokens <= POLAR_WORDS), axis=1)
  negative = np.sum((tokens > POLAR_WORDS) & (tokens <= 2 * POLAR_WORDS), axis=1)
  keep = positive != negative
  return tokens[keep].astype(np.int32), (positive > negative)[keep].astype(np.int32)


class Block(nn.Module):
  """A pre-norm transformer block."""

  dim: int
  heads: int

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(name="attention_norm")(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attention")(h, h)
    h = nn.LayerNorm(name="mlp_norm")(x)
    h = nn.Dense(4 * self.dim, name="mlp_in")(h)
    return x + nn.Dense(self.dim, name="mlp_out")(nn.gelu(h))


class Classifier(nn.Module):
  """Embeddings, ``layers_0 .. layers_{n-1}``, a pooler and a two-way head."""

  n_layers: int = 4
  dim: int = 32
  heads: int = 4

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(VOCAB, self.dim, name="word_embeddings")(tokens)
    positions = self.param("position_embeddings", nn.initializers.normal(0.02),
                           (SEQ_LEN, self.dim))
    x = x + positions[None]
    for i in range(self.n_layers):
      x = Block(self.dim, self.heads, name=f"layers_{i}")(x)
    x = nn.LayerNorm(name="final_norm")(x).mean(axis=1)
    x = nn.tanh(nn.Dense(self.dim, name="pooler")(x))
    return nn.Dense(2, name="classifier")(x)


def no_decay_on_bias_and_norm(name: str) -> bool:
  """Paddle's usual ``apply_decay_param_fun``: decay weights, not biases or norms."""
  return not (name.endswith("bias") or "norm" in name)


def main(argv: Sequence[str] | None = None) -> list[float]:
  assert __doc__ is not None  # the module docstring above.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--decay", type=float, default=0.75, help="layer-wise lr decay")
  parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
  parser.add_argument("--warmup", type=int, default=30)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  train_x, train_y = make_data(8192, args.seed)
  test_x, test_y = make_data(1024, args.seed + 1)
  model = Classifier(n_layers=args.layers)
  params = model.init(jax.random.key(args.seed), train_x[:1])["params"]

  config: dict[str, Any] = dict(
      learning_rate=optax_ldl.inverse_sqrt_schedule(args.warmup, args.lr),
      weight_decay=0.01,
      layerwise_decay=args.decay,
      n_layers=args.layers,
      apply_decay_param_fun=no_decay_on_bias_and_norm,
      grad_clip=optax_ldl.clip_grad_by_global_norm(1.0),
  )
  print(f"optax_ldl {optax_ldl.__version__}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}\n")
  description = optax_ldl.describe(params, **config)
  print(description, end="\n\n")
  per_group = {}
  for row in description.rows:
    per_group.setdefault(str(row.layer), row.lr_ratio)
  print("peak learning rate per layer group (lr * ratio):")
  for group, ratio in sorted(per_group.items(), key=lambda kv: kv[1]):
    print(f"  {group:>10}: ratio {ratio:.4f}  lr {args.lr * ratio:.3e}")
  print()

  state = train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=optax_ldl.adamwdl(**config))

  def loss_fn(params, x, y):
    logits = state.apply_fn({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)

  @jax.jit
  def train_step(state, x, y):
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, y)
    return state.apply_gradients(grads=grads), loss, acc

  evaluate = jax.jit(loss_fn)
  rng = np.random.default_rng(args.seed)
  losses, start = [], time.perf_counter()
  print(f"{'step':>5}  {'lr':>9}  {'train loss':>10}  {'test loss':>9}  {'test acc':>8}")
  for step in range(1, args.steps + 1):
    idx = rng.integers(0, len(train_x), args.batch)
    lr_now = float(config["learning_rate"](state.step))
    state, loss, _ = train_step(state, train_x[idx], train_y[idx])
    losses.append(float(loss))
    if step == 1 or step % max(1, args.steps // 10) == 0:
      test_loss, test_acc = evaluate(state.params, test_x, test_y)
      print(f"{step:>5}  {lr_now:>9.2e}  {np.mean(losses[-20:]):>10.4f}  "
            f"{float(test_loss):>9.4f}  {float(test_acc):>8.3f}")
  print(f"\n{args.steps} steps in {time.perf_counter() - start:.1f} s; train loss "
        f"{np.mean(losses[:10]):.4f} -> {np.mean(losses[-10:]):.4f}")
  return losses


if __name__ == "__main__":
  main()
