"""BERT-shaped parameter trees (HF-Flax paths), masks and layer ratios for the benchmarks.

Shared by run.py (JAX, torch) and _paddle_peer.py (Paddle, run by another
interpreter), so it imports nothing but the standard library.
"""

from __future__ import annotations

SHAPES = {
    # name: (n_layers, hidden, intermediate)
    "bert-base": (12, 768, 3072),
    "bert-large": (24, 1024, 4096),
    "bert-mini": (4, 256, 1024),  # --quick
}
VOCAB, POSITIONS, TYPES, N_CLASSES = 30522, 512, 2, 2
LAYERWISE_DECAY = 0.8


def layer_shapes(h: int, i: int) -> dict[str, tuple[int, ...]]:
  """One encoder layer, HF-Flax BERT names relative to ``encoder/layer/N``."""
  return {
      "attention/self/query/kernel": (h, h),
      "attention/self/query/bias": (h,),
      "attention/self/key/kernel": (h, h),
      "attention/self/key/bias": (h,),
      "attention/self/value/kernel": (h, h),
      "attention/self/value/bias": (h,),
      "attention/output/dense/kernel": (h, h),
      "attention/output/dense/bias": (h,),
      "attention/output/LayerNorm/scale": (h,),
      "attention/output/LayerNorm/bias": (h,),
      "intermediate/dense/kernel": (h, i),
      "intermediate/dense/bias": (i,),
      "output/dense/kernel": (i, h),
      "output/dense/bias": (h,),
      "output/LayerNorm/scale": (h,),
      "output/LayerNorm/bias": (h,),
  }


def flat_shapes(n_layers: int, h: int, i: int, scanned: bool = False) -> dict[str, tuple[int, ...]]:
  """``path name -> shape`` for BERT with a 2-way classifier.

  Unrolled: ``bert/encoder/layer/N/...`` (one leaf per layer and weight).
  Scanned: ``bert/encoder/layer/...`` with a leading layers axis of size ``n_layers``.
  """
  out = {
      "bert/embeddings/word_embeddings/embedding": (VOCAB, h),
      "bert/embeddings/position_embeddings/embedding": (POSITIONS, h),
      "bert/embeddings/token_type_embeddings/embedding": (TYPES, h),
      "bert/embeddings/LayerNorm/scale": (h,),
      "bert/embeddings/LayerNorm/bias": (h,),
  }
  per_layer = layer_shapes(h, i)
  if scanned:
    for k, s in per_layer.items():
      out[f"bert/encoder/layer/{k}"] = (n_layers,) + s
  else:
    for n in range(n_layers):
      for k, s in per_layer.items():
        out[f"bert/encoder/layer/{n}/{k}"] = s
  out["bert/pooler/dense/kernel"] = (h, h)
  out["bert/pooler/dense/bias"] = (h,)
  out["classifier/kernel"] = (h, N_CLASSES)
  out["classifier/bias"] = (N_CLASSES,)
  return out


def decays(name: str) -> bool:
  """Weight decay everywhere except biases and LayerNorm."""
  return not (name.endswith("bias") or "LayerNorm" in name)


def ratio(name: str, n_layers: int, decay: float = LAYERWISE_DECAY) -> float:
  """The layer-wise lr ratio (PaddleNLP rule) for an unrolled name; a stacked
  (scanned) weight gets one ratio, that of the top layer (``decay``)."""
  parts = name.split("/")
  if "layer" in parts:
    j = parts.index("layer")
    if j + 1 < len(parts) and parts[j + 1].isdigit():
      return decay ** (n_layers - int(parts[j + 1]))
    return decay  # stacked: one ratio for the whole subtree (see RESULTS.md)
  if "embeddings" in parts:
    return decay ** (n_layers + 1)
  return 1.0


def n_params(shapes: dict[str, tuple[int, ...]]) -> int:
  total = 0
  for s in shapes.values():
    k = 1
    for d in s:
      k *= d
    total += k
  return total
