"""The wording of ``trace_layers``'s errors: its name, short values, the no-layers diagnosis."""

from __future__ import annotations

import collections
from typing import Any

from optax_ldl._src.trace.units import Families, common_prefix, module_comps
from optax_ldl._src.trace.walk import Uses

OWNER = "trace_layers"


def describe_value(value: Any) -> str:
  """``repr(value)``, cut to 80 characters."""
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def no_layers_message(names: list[str], fams: Families, uses: Uses, free: list[int],
                      data: int) -> str:
  """Why no layers were found: one layer applied several times (ALBERT), or no family.

  Args:
    names: every leaf's path name.
    fams: the numbered families of the tree.
    uses: every leaf's applications ``[(time, result mask)]``.
    free: the float leaves that no override pins.
    data: the example inputs' bit.
  """
  counts = {i: sum(1 for _, m in uses.get(i, ()) if m & data) for i in free}
  reused = [i for i in free if counts[i] >= 2]
  if reused:
    # ALBERT: one layer in the tree, applied once per layer of the model.
    n = collections.Counter(counts[i] for i in reused).most_common(1)[0][0]
    where = "/".join(common_prefix([module_comps(names[i]) for i in reused]))
    where = where or names[reused[0]]
    shown = [names[i] for i in reused[:4]]
    return (
        f"{OWNER}: shared weights: found no layers of the tree, but {len(reused)} leaves "
        f"under {where!r} ({shown}{' ...' if len(reused) > 4 else ''}) are each applied "
        f"{n} times, one application after another: one layer shared by {n} layers of the "
        f"model (ALBERT-style sharing, applications 1..{n}), so it has no single layer. "
        f"Place it with overrides, e.g. overrides={{{where!r}: 0}} (the shared layer as the "
        f"only layer: what runs before it gets the embedding ratio, what runs after it the "
        f"head's), or place every float leaf with overrides={{path or prefix: layer index | "
        f"'embedding' | 'head' | Placement}}.")
  lines = [f"{OWNER}: found no layers (no numbered units X_N, X/N or X<N>_ of the parameter "
           "tree that repeat with the same structure and run one after the other, no "
           "parameter sliced or indexed by a loop, and no modules repeating with a period "
           "along the residual stream)."]
  numbered = [(p, m) for p, m in fams.items()]
  if numbered:
    shown = "; ".join(f"{'/'.join(p)}: {sorted(m)[:4]}{' ...' if len(m) > 4 else ''}"
                      for p, m in numbered[:6])
    lines.append(f"Numbered families seen: {shown}.")
  lines.append("Place the parameters with overrides={path or prefix: layer index | "
               "'embedding' | 'head' | Placement} (all float leaves), or use the path rule.")
  return " ".join(lines)
