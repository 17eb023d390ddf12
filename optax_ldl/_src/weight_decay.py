"""Which parameters get weight decay: the recommended filter, and the mask adamwdl builds."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from optax_ldl._src.tree_names import path_name

_NO_DECAY_LEAVES = frozenset({"bias", "b", "scale"})
# torchvision/timm BatchNorm and GroupNorm modules: bn, bn1, bn_2, gn1 (``layer1.0.bn1.weight``).
_BATCH_OR_GROUP_NORM = re.compile(r"(bn|gn)(_?\d+)?")


def weight_decay_filter(name: str, *, embeddings: bool = True) -> bool:
  """The recommended ``apply_decay_param_fun``: no weight decay on biases and norms.

  Reads a path name of any common layout: linen and Hugging Face Flax
  (``LayerNorm_0/scale``, ``LayerNorm/bias``), NNX (paths ending in ``/value``),
  Paddle and PyTorch-style dotted names (``norm1.weight``, torchvision/timm
  BatchNorm and GroupNorm modules ``bn1``, ``gn1``), case-insensitively.
  Embedding tables decay when ``embeddings`` is true, as in BERT and
  PaddleNLP's recipes; pass ``embeddings=False`` (e.g. with
  ``functools.partial``) to exempt them.

  >>> [weight_decay_filter(n) for n in (
  ...     'layers_0/mlp/kernel', 'layers_0/mlp/bias', 'layers_0/LayerNorm_0/scale',
  ...     'layers/0/norm/scale/value', 'encoder.layers.0.norm1.weight',
  ...     'layer1.0.bn1.weight', 'layer1.0.conv1.weight',
  ...     'embeddings/word_embeddings/embedding')]
  [True, False, False, False, False, False, True, True]
  >>> weight_decay_filter('embeddings/word_embeddings/embedding', embeddings=False)
  False

  Args:
    name: the parameter's path name (keys joined by ``/``), or a dotted name.
    embeddings: whether embedding tables decay.

  Returns:
    ``True`` where weight decay applies.
  """
  if not isinstance(name, str):
    raise TypeError(f"weight_decay_filter: name must be a parameter's path name (str), got "
                    f"{name!r}")
  keys = [k for k in re.split(r"[/.]", name.lower()) if k]
  if keys and keys[-1] == "value":  # NNX: the variable's value under its name.
    keys = keys[:-1]
  if not keys or keys[-1] in _NO_DECAY_LEAVES:
    return False
  if any("norm" in k or k.startswith("ln") or _BATCH_OR_GROUP_NORM.fullmatch(k) for k in keys):
    return False
  if any("embed" in k for k in keys) or keys[-1] in ("wte", "wpe"):
    return embeddings
  return True


def decay_mask_of(
    owner: str, apply_decay_param_fun: Any, mask: Any
) -> None | Any | Callable[[Any], Any]:
  """The weight-decay mask for ``optax.add_decayed_weights``."""
  if apply_decay_param_fun is not None and mask is not None:
    raise ValueError(
        f"{owner}: pass apply_decay_param_fun (Paddle: a function of the "
        "parameter name) or mask (optax: a bool tree or a function of the "
        "params), not both."
    )
  if apply_decay_param_fun is None:
    return mask
  if not callable(apply_decay_param_fun):
    return apply_decay_param_fun  # a bool tree: optax's mask.

  def decides(path, _):
    name = path_name(path)
    decision = apply_decay_param_fun(name)
    if not isinstance(decision, (bool, np.bool_)):
      raise TypeError(
          f"{owner}: apply_decay_param_fun({name!r}) returned {decision!r}; it must return "
          "True (decay this parameter) or False. A filter that forgot its return gives None."
      )
    return bool(decision)

  return lambda tree: jax.tree_util.tree_map_with_path(decides, tree)


def check_mask(owner: str, mask: Any, params: Any) -> None:
  """Raises unless ``mask`` (a tree, or a function's result) fits ``params`` with bools."""
  if mask is None:
    return
  source = "the weight-decay mask"
  if callable(mask):
    mask = mask(params)
    source = "the weight-decay mask function's result"
  try:
    jax.tree.map(lambda m, _: None, mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{owner}: {source} does not match the params: it must have the params' "
        "structure (or a prefix of it) with bool leaves.\n"
        f"mask:   {jax.tree.structure(mask)}\nparams: {jax.tree.structure(params)}"
    ) from e
  bad = [x for x in jax.tree.leaves(mask) if not isinstance(x, (bool, np.bool_))]
  if bad:
    raise ValueError(f"{owner}: {source}'s leaves must be bools, got {bad[0]!r}")
