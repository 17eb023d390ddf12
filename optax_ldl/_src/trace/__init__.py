"""``trace_layers``: where every parameter sits, read from the model's data flow.

Modules, in the order a trace runs through them: :mod:`.entry` (the public
function: inputs checked, ``fn`` traced), :mod:`.overrides` (pinned leaves),
:mod:`.walk` (the jaxpr walk), :mod:`.units` (the tree's numbered families),
:mod:`.period` (layers from the period of the data flow), :mod:`.stacks` (the
stacks of layers), :mod:`.place` (every leaf placed, with its evidence) and
:mod:`.errors` (messages).
"""

from optax_ldl._src.trace.entry import trace_layers

__all__ = ("trace_layers",)
