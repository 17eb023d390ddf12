"""The phases of trace_layers, one by one, on tiny examples.

Every expected value is written by hand from the example (equations counted in
the jaxpr, masks as bits: leaf ``i`` is ``1 << i``).
"""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from optax_ldl._src.layer_map import Placement
from optax_ldl._src.trace.entry import abstract_leaves, float_leaves
from optax_ldl._src.trace.overrides import check_overrides, resolve
from optax_ldl._src.trace.period import period_units
from optax_ldl._src.trace.place import Flow, between_layers, embedded_in, entries
from optax_ldl._src.trace.stacks import (
    TracedStack,
    chained_runs,
    drop_stems,
    number_stacks,
    span,
)
from optax_ldl._src.trace.units import (
    families,
    parts_of_layers,
    pattern_name,
    repeats,
    select,
    unnumbered,
)
from optax_ldl._src.trace.walk import Walker, applications, bits, mask_of

F = jax.ShapeDtypeStruct((4, 4), jnp.float32)
X = jax.ShapeDtypeStruct((2, 4), jnp.float32)


def _walk(f, *args):
  """Walks f's jaxpr: the float args are leaves 0, 1, ...; the last arg is the data."""
  jaxpr = jax.make_jaxpr(f)(*args).jaxpr
  n = len(args) - 1
  w = Walker(1 << n)
  w.walk(jaxpr, [1 << i for i in range(n)] + [w.data],
         [(i, tuple(range(len(a.shape)))) for i, a in enumerate(args[:-1])] + [None])
  return w


# The walk.


def test_masks():
  assert mask_of([0, 3]) == 0b1001
  assert list(bits(0b1010)) == [1, 3]


def test_applications_group_by_leaf():
  uses, first_use = applications([(0, 2, 0b11), (0, 1, 0b101), (1, 4, 0b110)])
  assert dict(uses) == {0: [(2, 0b11), (1, 0b101)], 1: [(4, 0b110)]}
  assert first_use == {0: 1, 1: 4}


def test_walk_records_applications_and_the_skip_connection():
  # h = x @ e (time 0); h + tanh(h @ w) (times 1, 2, 3). Leaves e = 0, w = 1; data = 4.
  def f(e, w, x):
    h = lax.dot(x, e)
    return lax.add(h, lax.tanh(lax.dot(h, w)))

  w = _walk(f, F, F, X)
  assert w.t == 4
  assert w.consumptions == [(0, 0, 0b101), (1, 1, 0b111)]
  assert [(t, set(ins), m) for t, ins, m in w.mixes] == [
      (0, {0b100, 0b001}, 0b101), (1, {0b101, 0b010}, 0b111), (3, {0b101, 0b111}, 0b111)]
  assert w.skips == [0b010]  # the branch tanh(h @ w) holds w


def test_walk_sees_through_a_transpose():
  # The transpose (time 0) is the leaf itself: it is applied by the dot (time 1).
  w = _walk(lambda k, x: lax.dot(x, lax.transpose(k, (1, 0))), F, X)
  assert w.consumptions == [(0, 1, 0b11)]


def test_walk_of_a_scan_records_its_stacked_leaf_and_its_two_walks():
  # A scan of 3 layers over ws (3, 4, 4), body: dot, tanh. Walk 0 is times 0-1, walk 1
  # times 2-3; the fixpoint walks in between record nothing.
  def f(ws, x):
    return lax.scan(lambda h, k: (lax.tanh(lax.dot(h, k)), None), x, ws)[0]

  w = _walk(f, jax.ShapeDtypeStruct((3, 4, 4), jnp.float32), X)
  assert w.stacked == {0: (0, 0)}
  assert w.scans == [{"length": 3, "ranges": [(0, 1), (2, 3)]}]
  assert [(leaf, t) for leaf, t, _ in w.consumptions] == [(0, 0), (0, 2)]


def test_walk_of_a_fori_loop_records_the_leaf_its_counter_indexes():
  # fori_loop(0, 3) is a scan whose body reads ws[i] with its counter i: ws is stacked on
  # axis 0 (loop 0), the slice is ws itself (no application), the dot applies it.
  def f(ws, x):
    return lax.fori_loop(0, 3, lambda i, h: lax.tanh(lax.dot(h, ws[i])), x)

  w = _walk(f, jax.ShapeDtypeStruct((3, 4, 4), jnp.float32), X)
  assert w.stacked == {0: (0, 0)} and w.indexed == {0}
  assert w.scans[0]["length"] == 3 and len(w.scans[0]["ranges"]) == 2
  assert {leaf for leaf, _, _ in w.consumptions} == {0}
  assert all(m == 0b11 for _, _, m in w.consumptions)  # no loop counter bit recorded


# The numbered units of the tree.

_NAMES = ["embed", "head/w", "layers_0/b", "layers_0/w", "layers_1/b", "layers_1/w"]
_SHAPES = [((8, 4), "float32"), ((4, 2), "float32"),
           ((4,), "float32"), ((4, 4), "float32"), ((4,), "float32"), ((4, 4), "float32")]


def test_families_of_numbered_siblings():
  fams = families(_NAMES, list(range(6)), _SHAPES)
  assert list(fams) == [("layers_*",)]
  members = fams[("layers_*",)]
  assert {m: info["leaves"] for m, info in members.items()} == {
      "layers_0": [2, 3], "layers_1": [4, 5]}
  assert members["layers_0"]["sig"] == (("b", ((4,), "float32")), ("w", ((4, 4), "float32")))
  assert not members["layers_0"]["composite"]  # its leaves sit in the member itself
  assert repeats(members)
  assert select(fams, []) == [("layers_*",)]


def test_families_of_numbered_children_are_composite():
  names = ["blocks/0/attn/w", "blocks/1/attn/w"]
  fams = families(names, [0, 1], [((4, 4), "float32")] * 2)
  assert list(fams) == [("blocks", "*")]
  assert fams[("blocks", "*")]["blocks/0"]["composite"]


def test_unnumbered_and_a_number_inside_a_flat_key():
  assert unnumbered("h_3/ln_1/w") == "h/ln/w"
  assert unnumbered("layer/0/t5_layer_norm_4/weight") == "layer/#/t_layer_norm/weight"
  assert unnumbered("t5_layer_norm/weight") == "t_layer_norm/weight"  # counter 0: no suffix
  names = ["stack0_block0_1_conv/k", "stack0_block1_1_conv/k", "stack1_block0_1_conv/k",
           "stack1_block0_0_conv/k"]
  fams = families(names, [0, 1, 2, 3], [((3, 3), "float32")] * 4)
  # stack*: units stack0 and stack1; stack*_block*: four blocks; the block's parts _0, _1.
  assert {m: info["leaves"] for m, info in fams[("stack*_block*",)].items()} == {
      "stack0_block0": [0], "stack0_block1": [1], "stack1_block0": [2, 3]}
  assert fams[("stack*_block*",)]["stack1_block0"]["chain"] == ("stack1",)
  assert set(fams) == {("stack*",), ("stack*_block*",), ("stack*_block*_*",)}


def test_pattern_name():
  assert pattern_name(("layers_*",)) == "layers"
  assert pattern_name(("encoder", "blocks", "*")) == "encoder/blocks"
  assert pattern_name(("stage", "block*")) == "stage/block"
  assert pattern_name(("transformer", "resblocks.*")) == "transformer/resblocks"


def test_repeats_allows_a_few_extra_leaves_in_one_member():
  a, b, c = ("a", 1), ("b", 1), ("c", 1)
  assert repeats({"0": {"sig": (a, b)}, "1": {"sig": (a, b, c)}})  # T5's block 0
  assert not repeats({"0": {"sig": (a,)}, "1": {"sig": (b,)}})
  assert not repeats({"0": {"sig": (a,)}})


def test_parts_of_layers_when_a_skip_bypasses_two_inner_units():
  # blocks/0 holds conv_0 (leaf 0) and conv_1 (leaf 1): the units of blocks/0/conv_*.
  # Each inner member lists the units that enclose it (its chain).
  outer = {"blocks/0": {"leaves": [0, 1], "chain": ()}}
  inner = {"blocks/0/conv_0": {"leaves": [0], "chain": ("blocks/0",)},
           "blocks/0/conv_1": {"leaves": [1], "chain": ("blocks/0",)}}
  assert parts_of_layers(outer, inner, [0b11])  # x + conv_1(conv_0(x))
  assert not parts_of_layers(outer, inner, [0b01])  # x + conv_0(x): conv_0 is a layer


def test_period_units_choose_the_phase_that_keeps_residual_branches_whole():
  # Modules, first read in this order: e (embedding), then n_k (norm), a_k (attention) for
  # k = 0, 1, 2, then f (final norm). The branches x + a_k(n_k(x)) hold n_k and a_k.
  names = ["e/w", "n/s", "a/w", "n_1/s", "a_1/w", "n_2/s", "a_2/w", "n_3/s"]
  shapes = [((5, 4), "f")] + [((4,), "f"), ((4, 4), "f")] * 3 + [((4,), "f")]
  first_use = {i: i for i in range(8)}
  skips = [mask_of([1, 2]), mask_of([3, 4]), mask_of([5, 6])]
  units, unit_names, stack = period_units(names, list(range(8)), shapes, first_use, skips)
  # (n, a) x 3 and (a, n) x 3 both repeat; only the first keeps each branch in one unit.
  assert units == [[1, 2], [3, 4], [5, 6]]
  assert unit_names[1] == "n_1 .. a_1" and stack == ""
  assert period_units(names, list(range(8)), shapes, first_use, []) is None  # no branch


# The stacks.


def _stack(name, units, intervals, **kw):
  unit_names = [f"{name}_{k}" for k in range(len(units))]
  return TracedStack(name=name, units=units, unit_names=unit_names, depth=len(units),
                     intervals=intervals, **kw)


def test_where_in_time():
  s = _stack("s", [[0], [1]], [(2, 5), (7, 9)])
  assert [s.where(t) for t in (0, 3, 6, 8, 10)] == [
      ("before", 0), ("in", 0), ("between", 1), ("in", 1), ("after", 2)]


def test_span_ends_a_unit_before_the_next_one_starts():
  # Leaf 0 (unit 0) is applied at 2 and 5, and again at 8 inside unit 1.
  s = _stack("s", [[0], [1]], [])
  uses = {0: [(2, 1), (5, 1), (8, 3)], 1: [(7, 2), (9, 2)]}
  span(s, uses, {0: 2, 1: 7})
  assert (s.leaves, s.intervals, s.start) == (0b11, [(2, 5), (7, 9)], 2)


def test_chained_runs_drop_a_unit_that_does_not_read_the_previous_one():
  members = {"l0": {"leaves": [0]}, "l1": {"leaves": [1]}, "l2": {"leaves": [2]}}
  uses = {1: [(3, 0b011)], 2: [(5, 0b100)]}  # l1 reads l0's output; l2 does not read l1's
  assert chained_runs(["l0", "l1", "l2"], members, uses) == [["l0", "l1"]]
  uses[2] = [(5, 0b110)]
  assert chained_runs(["l0", "l1", "l2"], members, uses) == [["l0", "l1", "l2"]]


def test_drop_stems():
  # Every application of main's first layer (leaf 1) to the data (bit 3) depends on the
  # stem's leaf 0: the stem is main's embedding stage. Without that dependence it stays.
  stem = _stack("stem", [[0]], [(0, 1)], leaves=0b001)
  main = _stack("main", [[1], [2]], [(2, 3), (4, 5)], leaves=0b110)
  assert drop_stems([stem, main], {1: [(2, 0b1011)]}, 0b1000) == [main]
  assert drop_stems([stem, main], {1: [(2, 0b1010)]}, 0b1000) == [stem, main]


def test_number_stacks():
  enc = _stack("enc", [[0], [1], [2]], [], start=1)
  dec = _stack("dec", [[3], [4]], [], start=5)
  stacks, depths = number_stacks([dec, enc], "per_stack")
  assert [s.name for s in stacks] == ["enc", "dec"]
  assert depths == {"enc": 3, "dec": 2}
  stacks, depths = number_stacks([dec, enc], "continue")
  assert [(s.final_name, s.offset) for s in stacks] == [("", 0), ("", 3)]
  assert depths == {"": 5}


# Overrides.


def test_check_overrides_longest_prefix_wins():
  names = ["a/b/w", "a/c", "n"]
  assert check_overrides({"a": "head", "a/b/": 0}, names, [0, 1]) == {0: 0, 1: "head"}
  with pytest.raises(ValueError, match=r"overrides \['z'\] match no float parameter"):
    check_overrides({"z": "head"}, names, [0, 1])


def test_resolve():
  s = _stack("s", [[0]], [], final_name="")
  assert resolve("head", "h", [s]) == Placement("head")
  assert resolve(2, "w", [s]) == Placement("layer", "", layer=2)
  assert resolve("embedding", "e", [s], s) == Placement("embedding", "")
  two = [_stack("a", [[0]], [], final_name="a"), _stack("b", [[1]], [], final_name="b")]
  with pytest.raises(ValueError, match=r"needs exactly one stack; the stacks are \['a', 'b'\]"):
    resolve(1, "w", two)


# Placement of the leaves outside the layers.


def test_entries_of_a_leaf_outside_the_layers():
  # Leaf 2 (outside) meets the layers' leaf 0 at time 3; at time 4 its input already
  # depends on a layer, so that is no entry.
  mixes = [(3, (0b100, 0b001), 0b101), (4, (0b101, 0b010), 0b111)]
  assert dict(entries(mixes, block=0b011, nonblock=0b100)) == {2: [(3, 0b001)]}


def _flow(stack):
  return Flow([stack], {}, {}, {}, {}, block=stack.leaves, applied_mask=stack.leaves | 0b1000)


def test_between_layers_and_after_them():
  s = _stack("", [[0], [1]], [(0, 2), (5, 7)], leaves=0b11)
  flow = _flow(s)
  assert between_layers([(3, 0b1000)], [], flow) == (
      Placement("layer", "", layer=1), "data flow: read between units 0 and 1 of ''")
  assert between_layers([(9, 0b1000)], [], flow) == (
      Placement("head"), "data flow: read after the last unit")
  assert between_layers([], [], flow)[0] == Placement("head")


def test_embedded_in_the_stack_whose_first_layer_it_enters():
  s = _stack("", [[0], [1]], [(0, 2), (5, 7)], leaves=0b11)
  assert embedded_in([(1, 0b01)], [s]) is s
  assert embedded_in([(1, 0b01), (6, 0b10)], [s]) is None  # it enters layer 1 too


# The entry point's phases.


def test_abstract_leaves_and_float_leaves():
  params = {"b": {"w": jnp.ones((2, 3))}, "a": jnp.zeros((4,), jnp.int32)}
  names, abstract, _ = abstract_leaves(params)
  assert names == ["a", "b/w"]
  assert abstract == [jax.ShapeDtypeStruct((4,), jnp.int32),
                      jax.ShapeDtypeStruct((2, 3), jnp.float32)]
  assert float_leaves(abstract) == [1]
  with pytest.raises(ValueError, match="params has no float leaves"):
    float_leaves(abstract[:1])
