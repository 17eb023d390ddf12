"""Layer placement on real models: the zoo's hand-written expectations vs optax_ldl.

Every entry of ``tests.zoo.ZOO`` is a tiny random-init model from a real library with the placement
of each float parameter written by hand from the architecture. The ratios expected here are computed
from those placements with the formula of the docs (written out below, independently of
``LayerMap.ratio``): decay ``d``, a stack of depth ``L``: layer ``i`` -> ``d**(L - i)``, the stack's
embedding stage -> ``d**(L + 1)``, the head -> 1, slice ``j`` of a stacked leaf whose slice 0 is
layer ``k`` -> ``d**(L - k - j)``.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_ldl

# The zoo's libraries come from the `zoo` extra (README command 2); CI sets
# OPTAX_LDL_REQUIRE_ZOO=1 so that a missing install fails instead of skipping.
_MISSING = [m for m in ("transformers", "equinox", "haiku", "keras", "keras_hub")
            if importlib.util.find_spec(m) is None]
if _MISSING:
  _MESSAGE = (f"the zoo's libraries are not installed ({', '.join(_MISSING)}): "
              "pip install -e '.[zoo]' && pip install --no-deps keras-hub==0.32.0")
  if os.environ.get("OPTAX_LDL_REQUIRE_ZOO") == "1":
    raise RuntimeError(_MESSAGE + " (OPTAX_LDL_REQUIRE_ZOO=1)")
  pytest.skip(_MESSAGE, allow_module_level=True)

from tests.zoo import ZOO, float_paths  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::PendingDeprecationWarning")

BY_NAME = {z.name: z for z in ZOO}
NAMES = sorted(BY_NAME)
LR = 1e-3


def want_ratio(place, depths, decay, leaf):
  """The ratio of one leaf (a tuple over the slices of a stacked leaf), by the docs' formula."""
  if place.kind == "head":
    return 1.0
  if place.kind == "ratio":
    return float(place.ratio)
  depth = depths[place.stack]
  if place.kind == "embedding":
    return decay ** (depth + 1)
  if place.axis is None:
    return decay ** (depth - place.layer)
  return tuple(decay ** (depth - place.layer - j) for j in range(leaf.shape[place.axis]))


def expected_ratios(z, decay):
  leaves = float_paths(z.build().params)
  return {p: want_ratio(place, z.depths, decay, leaves[p]) for p, place in z.expected.items()}


def _same(got, want, rtol):
  if isinstance(want, tuple) or isinstance(got, (tuple, list)):
    if not isinstance(want, tuple) or not isinstance(got, (tuple, list)) or len(got) != len(want):
      return False
    return all(_same(g, w, rtol) for g, w in zip(got, want))
  return bool(np.isclose(float(got), want, rtol=rtol, atol=0.0))


def _mismatches(got: dict, want: dict, rtol: float) -> list[str]:
  bad = [f"  {p}: missing" for p in sorted(set(want) - set(got))]
  bad += [f"  {p}: unexpected" for p in sorted(set(got) - set(want))]
  bad += [f"  {p}: got {got[p]}, want {want[p]}" for p in sorted(set(got) & set(want))
          if not _same(got[p], want[p], rtol)]
  return bad


@functools.cache
def traced(name):
  z = BY_NAME[name]
  b = z.build()
  return optax_ldl.trace_layers(b.fn, b.params, *b.args, overrides=z.overrides)



# Known failures, open in the tracker; strict, so a fix shows up as an unexpected pass.
TRACE_XFAIL: dict[str, str] = {}
PATH_XFAIL: dict[str, str] = {}


def _cases(xfails):
  return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=xfails[n]))
          if n in xfails else n for n in NAMES]

@pytest.mark.parametrize("name", NAMES)
def test_expectation_covers_every_float_leaf(name):
  z = BY_NAME[name]
  paths = set(float_paths(z.build().params))
  assert paths, "the model has no float parameters"
  assert set(z.expected) == paths, f"not placed by hand: {sorted(paths - set(z.expected))}"
  assert not z.unused_rules(), f"rules that place nothing: {z.unused_rules()}"
  for place in z.expected.values():  # every stack named has a depth, every layer fits in it
    if place.kind in ("embedding", "layer"):
      assert place.stack in z.depths, place
    if place.kind == "layer" and place.axis is None:
      assert place.layer < z.depths[place.stack], place
  layers = {(p.stack, p.layer) for p in z.expected.values() if p.kind == "layer" and p.axis is None}
  stacked = [p for p in z.expected.values() if p.axis is not None]
  for stack, depth in z.depths.items():  # each unstacked stack has all its layers 0..L-1
    if not any(p.stack == stack for p in stacked):
      assert {i for s, i in layers if s == stack} == set(range(depth)), stack


@pytest.mark.parametrize("name", NAMES)
def test_forward_runs(name):
  b = BY_NAME[name].build()
  out = jax.jit(b.fn)(b.params, *b.args)
  leaves = jax.tree_util.tree_leaves(out)
  assert leaves
  for x in leaves:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
      assert np.isfinite(x).all()


@pytest.mark.parametrize("name", _cases(TRACE_XFAIL))
def test_trace_layers_is_exact(name):
  z = BY_NAME[name]
  leaves = float_paths(z.build().params)
  if z.refusal:  # a documented refusal without overrides; the expectation is with them
    b = z.build()
    with pytest.raises(ValueError, match=z.refusal):
      optax_ldl.trace_layers(b.fn, b.params, *b.args)
  lm = traced(name)
  for decay in (0.8, 0.5):
    got = {}
    for path in lm:
      if path not in leaves:
        continue
      place = lm[path]
      if place.axis is not None:
        n = leaves[path].shape[place.axis]
        got[path] = tuple(lm.ratio(path, decay, j) for j in range(n))
      else:
        got[path] = lm.ratio(path, decay)
    bad = _mismatches(got, expected_ratios(z, decay), 1e-6)
    assert not bad, f"{name}, decay {decay}: trace_layers differs on\n" + "\n".join(bad)


@pytest.mark.parametrize("name", _cases(PATH_XFAIL))
def test_path_rule_is_exact_or_raises(name):
  z = BY_NAME[name]
  params = z.build().params
  try:
    description = optax_ldl.describe(params, layerwise_decay=0.8)
  except ValueError as e:
    if z.path_rule == "exact":
      raise AssertionError(f"{name}: the path rule must place this layout, it raised: {e}") from e
    assert any(p in str(e) for p in z.expected), (
        f"{name}: the refusal must name at least one of the model's paths; it says: {e}")
    return
  got = {row.path: row.lr_ratio for row in description.rows if row.path in z.expected}
  bad = _mismatches(got, expected_ratios(z, 0.8), 1e-6)
  assert not bad, f"{name}: the path rule differs silently on\n" + "\n".join(bad)


@pytest.mark.parametrize("name", _cases(TRACE_XFAIL))
def test_one_adam_step_moves_each_leaf_by_its_ratio(name):
  z = BY_NAME[name]
  params = z.build().params
  tx = optax_ldl.adamwdl(LR, weight_decay=0.0, layerwise_decay=0.8, layers=traced(name))
  state = tx.init(params)
  grads = jax.tree_util.tree_map(np.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  # Eager and jitted updates agree, and so does the path rule wherever it places the tree
  # (its describe() rows are checked against the expectation in
  # test_path_rule_is_exact_or_raises).
  _assert_same_updates(name, "jit", updates, jax.jit(tx.update)(grads, state, params)[0])
  try:
    by_path = optax_ldl.adamwdl(LR, weight_decay=0.0, layerwise_decay=0.8)
    path_state = by_path.init(params)
  except ValueError:
    pass  # the path rule refuses this tree (test_path_rule_is_exact_or_raises).
  else:
    _assert_same_updates(name, "path rule, jit", updates,
                         jax.jit(by_path.update)(grads, path_state, params)[0])
  # describe() with the traced map shows the ratios the update applies.
  rows = optax_ldl.describe(params, layerwise_decay=0.8, layers=traced(name)).rows
  described = {row.path: row.lr_ratio for row in rows if row.path in z.expected}
  bad = _mismatches(described, expected_ratios(z, 0.8), 1e-6)
  assert not bad, f"{name}: describe(layers=trace_layers(...)) differs on\n" + "\n".join(bad)
  new = float_paths(optax.apply_updates(params, updates))
  old = float_paths(params)
  want = expected_ratios(z, 0.8)
  bad = []
  for path, ratio in sorted(want.items()):
    p0 = np.asarray(old[path], np.float64)
    p1 = np.asarray(new[path], np.float64)
    if isinstance(ratio, tuple):  # one ratio per slice along the stacking axis
      shape = [1] * p0.ndim
      axis = z.expected[path].axis
      shape[axis] = len(ratio)
      ratio = np.reshape(np.asarray(ratio), shape)
    measured = np.abs(p1 - p0) / LR
    # Adam's first step with gradient 1 moves by lr * ratio; float32 rounds p to its spacing.
    tol = 1e-4 * ratio + np.spacing(np.maximum(np.abs(p0), np.abs(p1)).astype(np.float32)) / LR
    if not np.all(np.abs(measured - ratio) <= tol):
      bad.append(f"  {path}: |dp|/lr in [{measured.min():.6g}, {measured.max():.6g}], "
                 f"want {np.unique(ratio)}")
  assert not bad, f"{name}: one Adam step differs on\n" + "\n".join(bad)


def _assert_same_updates(name, what, want, got):
  want, got = float_paths(want), float_paths(got)
  bad = [path for path in want
         if not np.allclose(np.asarray(got[path], np.float64), np.asarray(want[path], np.float64),
                            rtol=1e-6, atol=0)]
  assert not bad, f"{name}: {what} updates differ from the eager traced-layers update on {bad[:4]}"


def test_trace_reads_one_module_tree_across_flax_collections():
  # HF Flax RegNet traced with its whole variables ({'params', 'batch_stats'}): a block's
  # BatchNorm statistics sit in `batch_stats/<block>` beside its convolutions in
  # `params/<block>`. The layers are the blocks, whatever collection holds their leaves.
  # Expected from the architecture (RegNetConfig depths=[1, 2]): the embedder (stem) is the
  # embedding stage; the blocks are numbered through the stages (stage 0 block 0 = layer 0,
  # stage 1 blocks 0 and 1 = layers 1 and 2), shortcut included; the classifier is the head.
  import re

  import transformers

  config = transformers.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2],
                                     groups_width=8, num_labels=3)
  model = transformers.FlaxRegNetForImageClassification(config, seed=0)
  variables = model.params
  assert set(variables) == {"params", "batch_stats"}
  x = jnp.zeros((1, 3, 32, 32), jnp.float32)
  lm = optax_ldl.trace_layers(lambda v, a: model(a, params=v), variables, x)
  layer_of = {(0, 0): 0, (1, 0): 1, (1, 1): 2}
  expected = {}
  for path in float_paths(variables):
    block = re.search(r"/stages/(\d+)/layers/(\d+)/", path)
    if block:
      expected[path] = optax_ldl.Placement(
          "layer", layer=layer_of[int(block[1]), int(block[2])])
    elif "/embedder/" in path:
      expected[path] = optax_ldl.Placement("embedding")
    else:
      assert "/classifier/" in path, path
      expected[path] = optax_ldl.Placement("head")
  got = dict(lm.placements)
  bad = {p: (str(got.get(p)), str(w)) for p, w in expected.items() if got.get(p) != w}
  assert not bad and set(got) == set(expected), bad
  assert dict(lm.depths) == {"": 3}
