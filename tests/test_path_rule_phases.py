"""The phases of path_layers (optax_ldl/_src/path_rule/), one at a time, on tiny trees.

Every expected value is written by hand from the tree in the test.
"""

import jax
import jax.numpy as jnp
import pytest

from optax_ldl._src.path_rule import depths, families, leaves, names, stacks


def sds(*shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def read(tree, name_dict=None):
  return leaves.read_leaves(tree, name_dict, "test")


def test_read_leaves_skips_ints_and_reads_timm_dots_as_slashes():
  tree = {"blocks.0.attn.w": sds(2), "blocks.1.attn.w": sds(2), "count": sds(dtype=jnp.int32),
          "norm.w": sds(2)}
  got = read(tree)
  assert [lf.path for lf in got] == ["blocks.0.attn.w", "blocks.1.attn.w", "norm.w"]
  assert [lf.rule_name for lf in got] == ["blocks/0/attn/w", "blocks/1/attn/w", "norm/w"]
  assert [(lf.match.kind, lf.match.indices, lf.match.family) for lf in got] == [
      ("layer", (0,), "blocks"), ("layer", (1,), "blocks"), ("head", (), "")]
  assert all(lf.plain_keys for lf in got)


def test_read_leaves_name_dict_and_plain_keys():
  got = read({"a": [sds(3)], "b": sds(2, 2)}, name_dict={"a/0": "x/layers_0/w", "b": "y"})
  assert [(lf.path, lf.rule_name, lf.shape, lf.plain_keys) for lf in got] == [
      ("a/0", "x/layers_0/w", (3,), False), ("b", "y", (2, 2), True)]
  with pytest.raises(ValueError, match="test: name_dict has no entry for parameter 'b'"):
    read({"b": sds(2)}, name_dict={"a": "x"})


def test_stack_container():
  assert names.stack_container("params/decoder/layers/mlp/kernel") == "params/decoder/layers"
  assert names.stack_container("blocks/w") == "blocks"
  assert names.stack_container("ScanBlock_0/Dense_0/kernel") == "ScanBlock_0"
  assert names.stack_container("layers/3/w") == ""          # layer 3, not a stack
  assert names.stack_container("layers_3/blocks/w") == ""   # inside layer 3
  assert names.stack_container("layers") == ""              # the parameter's own key
  assert names.stack_container("layers/value") == ""        # NNX: the key before .value


def test_explicit_stacks():
  tree = {"dec": {"layers": {"k": sds(8, 3, 8), "b": sds(8, 3)}}, "head": sds(2)}
  found: dict[str, leaves.FoundStack] = {}
  rest = stacks.explicit_stacks("test", read(tree), {"dec/layers": 1}, 3, found)
  assert [lf.path for lf in rest] == ["head"]
  assert found == {"dec/layers": leaves.FoundStack(
      "dec/layers", ["dec"], stacked={"dec/layers/b": 1, "dec/layers/k": 1}, length=3)}
  bad = {"dec": {"layers": {"k": sds(8, 3, 8), "b": sds(8, 4)}}}
  with pytest.raises(ValueError, match=r"disagree on the number of layers.*'dec/layers/k' has 3"):
    stacks.explicit_stacks("test", read(bad), {"dec/layers": 1}, None, {})


def test_scan_bodies():
  tree = {"blocks": {"EncoderBlock_0": {"Dense_0": {"kernel": sds(4, 2, 2), "bias": sds(4, 2)}}}}
  lfs = read(tree)
  found: dict[str, leaves.FoundStack] = {}
  problems: leaves.Problems = []
  assert stacks.scan_bodies(lfs, lfs, "auto", found, problems) == []
  assert problems == []
  assert found == {"blocks": leaves.FoundStack(
      "blocks", [], stacked={"blocks/EncoderBlock_0/Dense_0/bias": 0,
                             "blocks/EncoderBlock_0/Dense_0/kernel": 0}, length=4)}
  # Under a container the table does not call a stack: refused, not guessed.
  lfs = read({"body": tree["blocks"]})
  assert stacks.scan_bodies(lfs, lfs, "auto", {}, problems) == []
  assert len(problems) == 1 and "'body' may be an nn.scan stack" in problems[0][0]
  assert problems[0][1] == ["body/EncoderBlock_0/Dense_0/bias",
                            "body/EncoderBlock_0/Dense_0/kernel"]


def test_auto_stacks():
  found: dict[str, leaves.FoundStack] = {}
  problems: leaves.Problems = []
  stacks.auto_stacks(read({"decoder": {"layers": {"w": sds(3, 2), "b": sds(3)}},
                           "embed": sds(5, 2)}), found, problems)
  assert problems == []
  assert found == {"decoder/layers": leaves.FoundStack(
      "decoder/layers", ["decoder"], stacked={"decoder/layers/b": 0, "decoder/layers/w": 0},
      length=3)}
  stacks.auto_stacks(read({"layers": {"w": sds(3, 2), "b": sds(4)}}), {}, problems)
  assert [p for _, p in problems] == [["layers/b", "layers/w"]]
  assert "axis-0 lengths differ ([3, 4])" in problems[0][0]


def test_number_families_nested_stages_numbered_through():
  paths = ["stages/0/layers/0/w", "stages/0/layers/1/w", "stages/1/layers/0/w"]
  found: dict[str, leaves.FoundStack] = {}
  problems: leaves.Problems = []
  families.number_families(read(dict.fromkeys(paths, sds(2))), found, problems)
  assert problems == []
  assert found == {"stages": leaves.FoundStack(
      "stages", [], layers={"stages/0/layers/0/w": 0, "stages/0/layers/1/w": 1,
                            "stages/1/layers/0/w": 2})}


def test_number_families_refusals():
  problems: leaves.Problems = []
  families.number_families(read({"layers_1": {"w": sds(2)}, "layers_2": {"w": sds(2)}}), {},
                           problems)
  assert problems == [("the family 'layers' has no layer 0 (numbered from 1: 1-based?)",
                       ["layers_1/w", "layers_2/w"])]
  problems.clear()
  two = {"layers_0": {"w": sds(2)}, "mlp": {"layers_0": {"w": sds(2)}}}
  families.number_families(read(two), {}, problems)
  assert len(problems) == 1 and problems[0][0].startswith("several candidate layer families")


def test_unused_numbered():
  lfs = read({"layers_0": {"w": sds(2)}, "experts": [sds(2), sds(2)], "embed": [sds(2)]})
  found: dict[str, leaves.FoundStack] = {}
  families.number_families([lf for lf in lfs if lf.match.kind == "layer"], found, [])
  assert families.unused_numbered(lfs, found) == ["experts/0", "experts/1"]


def test_set_depths():
  def stack():
    return {"layers": leaves.FoundStack("layers", [], layers={"a": 0, "b": 2})}

  found, notes = stack(), []
  depths.set_depths("test", found, None, notes)
  assert (found["layers"].depth, notes) == (3, [])
  found = stack()
  depths.set_depths("test", found, 4, notes)
  assert found["layers"].depth == 4
  (note,) = notes
  assert note.startswith("n_layers=4 but the tree shows 3 layers (the top layer gets decay**2, "
                         "not decay). If the optimizer sees the whole model, pass n_layers=3")
  # A part of the model (a frozen top layer) is not told to pass its visible depth.
  assert "keep n_layers or pass layers=optax_ldl.path_layers(" in note
  with pytest.raises(ValueError, match="test: parameter 'b' is in layer 2, but n_layers=1"):
    depths.set_depths("test", stack(), 1, [])


def test_n_layers_arg():
  assert depths.n_layers_arg("test", None) is None
  assert depths.n_layers_arg("test", 3) == 3
  assert depths.n_layers_arg("test", {"enc": jnp.int32(2)}) == {"enc": 2}
  with pytest.raises(ValueError, match=r"test: n_layers\['enc'\] must be >= 1, got 0"):
    depths.n_layers_arg("test", {"enc": 0})
