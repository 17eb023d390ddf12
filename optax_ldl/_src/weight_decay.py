"""Weight decay per parameter: the recommended filter, the mask, and multipliers per group."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_ldl._src import stacked_ratio as stacks
from optax_ldl._src.tree_names import floats_only, path_name

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


_ROLES = ("embedding", "head", "layer", "norm", "bias")


def role_matches(key: Any, name: str, place: Any) -> bool:
  """Whether a ``weight_decay_mults`` key matches a leaf (slice) placed at ``place``.

  A key is a placement kind (``"embedding"``, ``"head"``, ``"layer"``), a role read
  from the path name (``"norm"``, ``"bias"``: as :func:`weight_decay_filter` reads
  them), a layer index (an int), or else a regular expression searched in the path name.
  """
  if isinstance(key, int):
    return place is not None and place.kind == "layer" and place.layer == key
  if key in ("embedding", "head", "layer"):
    return place is not None and place.kind == key
  keys = [k for k in re.split(r"[/.]", name.lower()) if k]
  keys = keys[:-1] if keys and keys[-1] == "value" else keys
  if key == "bias":
    return bool(keys) and keys[-1] in ("bias", "b")
  if key == "norm":
    return not weight_decay_filter(name) and not (keys and keys[-1] in ("bias", "b")) and any(
        "norm" in k or k.startswith("ln") or _BATCH_OR_GROUP_NORM.fullmatch(k) for k in keys)
  return re.search(key, name) is not None


def check_mults(owner: str, mults: Any) -> tuple[tuple[Any, float], ...] | None:
  """``weight_decay_mults`` as ``((key, multiplier), ...)``; an error naming it otherwise."""
  if mults is None:
    return None
  pairs = list(mults.items()) if isinstance(mults, dict) else mults
  accepted = ("weight_decay_mults must be a list of (key, multiplier) pairs (or a dict), the "
              f"first matching key winning: key one of {list(_ROLES)}, a layer index (int "
              ">= 0) or a regular expression of the path name; multiplier a number >= 0")
  if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
    raise TypeError(f"{owner}: {accepted}; got {mults!r}")
  out = []
  for pair in pairs:
    ok = isinstance(pair, (list, tuple)) and len(pair) == 2
    key, mult = pair if ok else (None, None)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
      ok = ok and key >= 0
      key = int(key)
    elif isinstance(key, str):
      try:
        re.compile(key)
      except re.error:
        ok = False
    else:
      ok = False
    ok = ok and isinstance(mult, (int, float, np.integer, np.floating)) and not isinstance(
        mult, bool) and 0 <= float(mult) < float("inf")
    if not ok:
      raise ValueError(f"{owner}: {accepted}; got the entry {pair!r}")
    out.append((key, float(mult)))  # pyright: ignore[reportArgumentType]
  return tuple(out)


def group_decayed_weights(weight_decay: Any, mask: Any, config: Any, mults: Any,
                          at_base_rate: bool) -> Any:
  """``optax.add_decayed_weights`` with a multiplier per leaf, optionally at the base rate.

  Each decayed leaf adds ``weight_decay * c * p``, ``c`` the first matching
  multiplier of ``mults`` (1 when none matches). At the base rate ``c`` is also
  divided by the leaf's layer ratio, which the chain multiplies back afterwards:
  the decay is then ``weight_decay * c * p`` whatever the layer ratio (big_vision's
  semantics), and 0 where the ratio is 0.
  """
  def factor(name: str, place: Any, j: int | None) -> float:
    if place is not None and j is not None and place.kind == "layer":
      place = type(place)("layer", place.stack, place.layer + j)
    for key, mult in mults or ():
      if role_matches(key, name, place):
        return mult
    return 1.0

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("weight_decay_mults: the update needs the params (tx.update(g, s, params))")
    plan = config.plan(floats_only(params))
    keep = mask(params) if callable(mask) else mask
    keep = jax.tree.map(lambda _: True, params) if keep is None else keep
    keep = jax.tree.map(lambda m, p: jax.tree.map(lambda _: m, p), keep, params)

    def decay(path, u, p, on):
      name = path_name(path)
      if not on or name not in plan.labels:
        return u
      place, axis = plan.placements[name], plan.axes[name]
      ratio = plan.ratios[plan.labels[name]]
      if axis is not None:
        n = int(np.shape(p)[axis])
        c = jnp.asarray([factor(name, place, j) for j in range(n)])
        if at_base_rate:
          r = jnp.asarray(ratio.ratios)
          c = jnp.where(r == 0, 0.0, c / jnp.where(r == 0, 1.0, r))
        c = stacks.broadcast_ratio(c, axis, jnp.ndim(p))
      else:
        c = factor(name, place, None)
        if at_base_rate:
          c = jnp.where(ratio == 0, 0.0, c / jnp.where(ratio == 0, 1.0, ratio))
      return u + stacks.times_ratio(p, jnp.asarray(weight_decay) * c)

    return jax.tree_util.tree_map_with_path(decay, updates, params, keep), state

  def init_fn(params):
    del params
    return optax.EmptyState()

  return optax.GradientTransformation(init_fn, update_fn)
