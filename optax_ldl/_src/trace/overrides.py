"""The overrides of ``trace_layers``: placements the user pins, checked, matched and resolved.

An override maps a path name or prefix to ``'embedding'``, ``'head'``, a layer
index or a :class:`Placement`; the longest matching prefix wins, and a key that
matches no float leaf is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optax_ldl._src.layer_map import Placement
from optax_ldl._src.trace.errors import OWNER, describe_value
from optax_ldl._src.trace.stacks import TracedStack


def _check_specs(overrides: Any) -> None:
  """Raises unless ``overrides`` maps non-empty str keys to valid specs."""
  if not isinstance(overrides, Mapping):
    raise TypeError(
        f"{OWNER}: overrides must be a dict {{path name or prefix: 'embedding' | 'head' | "
        f"int | Placement}}, got {describe_value(overrides)}")
  for key, spec in overrides.items():
    if not isinstance(key, str) or not key:
      raise TypeError(f"{OWNER}: overrides keys must be path names or prefixes (non-empty "
                      f"str), got {key!r}")
    ok = (spec in ("embedding", "head") if isinstance(spec, str) else
          isinstance(spec, Placement) or (isinstance(spec, int) and not isinstance(spec, bool)
                                          and spec >= 0))
    if not ok:
      raise ValueError(f"{OWNER}: overrides[{key!r}] must be 'embedding', 'head', a layer "
                       f"index (int >= 0) or a Placement, got {describe_value(spec)}")


def _longest_prefix(name: str, keys: Any) -> str | None:
  """The key that is ``name`` or its longest prefix (keys may end with ``/``), else None."""
  best = None
  for key in keys:
    k = key.rstrip("/")
    if name == k or name.startswith(k + "/"):
      if best is None or len(k) > len(best.rstrip("/")):
        best = key
  return best


def check_overrides(overrides: Any, names: list[str], float_idx: list[int]) -> dict[int, Any]:
  """{leaf: spec} from overrides; the longest matching prefix wins."""
  if overrides is None:
    return {}
  _check_specs(overrides)
  result: dict[int, Any] = {}
  used = set()
  for i in float_idx:
    best = _longest_prefix(names[i], overrides)
    if best is not None:
      result[i] = overrides[best]
      used.add(best)
  unknown = [k for k in overrides if k not in used]
  if unknown:
    sample = ", ".join(repr(names[i]) for i in float_idx[:6])
    raise ValueError(
        f"{OWNER}: overrides {unknown} match no float parameter; keys are path names or "
        f"prefixes of them (keys joined by '/'), e.g. {sample}")
  return result


def resolve(spec: Any, name: str, stacks: list[TracedStack],
            deepest: TracedStack | None = None) -> Placement:
  """The placement an override spec gives leaf ``name``, once the stacks are known.

  ``'embedding'`` is the embedding stage of the ``deepest`` stack; an int is a
  layer of the only stack (of no stack when none was found).
  """
  if isinstance(spec, Placement):
    return spec
  if spec == "head":
    return Placement("head")
  if spec == "embedding":
    if deepest is None:
      raise ValueError(f"{OWNER}: overrides place {name!r} in the embedding stage, but no "
                       f"stack of layers was found; use a Placement with its stack")
    return Placement("embedding", deepest.final_name)
  names = sorted({s.final_name for s in stacks})
  if not stacks:
    return Placement("layer", "", layer=int(spec))
  if len(names) != 1:
    raise ValueError(
        f"{OWNER}: overrides give {name!r} the layer {spec}, which needs exactly one stack; "
        f"the stacks are {names}: use Placement('layer', stack, layer={spec})")
  return Placement("layer", names[0], layer=int(spec))
