"""Cost of ``trace_layers`` next to one jit compile of the same forward pass.

Run: ``python benchmarks/trace_cost.py``. Prints a markdown table: the time of
``trace_layers`` (abstract trace + analysis, parameters given as
``jax.ShapeDtypeStruct``) and of ``jax.jit(forward).lower(...).compile()`` on a
BERT-large-shaped flax model (24 layers, hidden 1024) and a 96-layer model.
Target: the trace is cheaper than one compile.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from optax_ldl._src.trace import trace_layers


class Layer(nn.Module):
  hidden: int
  heads: int

  @nn.compact
  def __call__(self, x):
    a = nn.SelfAttention(num_heads=self.heads, name="attention")(x)
    x = nn.LayerNorm(name="attention_norm")(x + a)
    y = nn.Dense(4 * self.hidden, name="intermediate")(x)
    y = nn.Dense(self.hidden, name="output")(nn.gelu(y))
    return nn.LayerNorm(name="output_norm")(x + y)


class Encoder(nn.Module):
  layers: int
  hidden: int
  heads: int
  vocab: int = 30522

  @nn.compact
  def __call__(self, ids):
    x = nn.Embed(self.vocab, self.hidden, name="word_embeddings")(ids)
    pos = self.param("position_embeddings", nn.initializers.normal(0.02),
                     (512, self.hidden))
    x = nn.LayerNorm(name="embeddings_norm")(x + pos[None, :ids.shape[1]])
    for i in range(self.layers):
      x = Layer(self.hidden, self.heads, name=f"layer_{i}")(x)
    return nn.Dense(self.hidden, name="pooler")(x[:, 0])


def _time(f, repeat):
  best = float("inf")
  for _ in range(repeat):
    start = time.perf_counter()
    f()
    best = min(best, time.perf_counter() - start)
  return best


def _measure(layers, hidden, heads, seq, repeat):
  model = Encoder(layers, hidden, heads)
  ids = jax.ShapeDtypeStruct((8, seq), jnp.int32)
  params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]

  def forward(p, x):
    return model.apply({"params": p}, x)

  found = []
  trace_s = _time(lambda: found.append(trace_layers(forward, params, ids)), repeat)
  compile_s = _time(lambda: jax.jit(forward).lower(params, ids).compile(), 1)
  return len(jax.tree.leaves(params)), found[0].depth(), trace_s, compile_s


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeat", type=int, default=2, help="trace repeats (best is kept)")
  parser.add_argument("--seq", type=int, default=128)
  args = parser.parse_args()
  rows = []
  for label, layers, hidden, heads in (("BERT-large (24 x 1024)", 24, 1024, 16),
                                       ("96 layers (96 x 512)", 96, 512, 8)):
    rows.append((label, *_measure(layers, hidden, heads, args.seq, args.repeat)))
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, batch 8 x {args.seq}\n")
  print("| model | leaves | layers found | trace_layers (s) | jit compile (s) | trace / compile |")
  print("|---|---|---|---|---|---|")
  for label, n_leaves, depth, trace_s, compile_s in rows:
    print(f"| {label} | {n_leaves} | {depth} | {trace_s:.2f} | {compile_s:.2f} | "
          f"{trace_s / compile_s:.2f} |")


if __name__ == "__main__":
  main()
