"""The default path rule: which layer a parameter is in, from its path name alone.

One table, :data:`RULES` (``table.py``), drives everything: :func:`classify`
(one name, ``names.py``), :func:`path_layers` (a whole tree, as an
:class:`optax_ldl.LayerMap`, ``tree.py``), the docs table
(:func:`rule_table_markdown`) and the error texts (:data:`RECOGNISED`). Stacked
(scanned) layers and the ``stacked`` argument are read in ``stacks.py``, for the
path rule and for a custom ``set_param_lr_fun`` alike.

The rule places a leaf only on positive evidence: inside one numbered layer of
an identified family, or named by the role vocabulary of the table (an
embedding-stage part, a post-stack part, a shared bias). It never guesses: a
tree it cannot place with confidence (a leaf beside the layers that no row
names, several candidate layer families, numbered containers it did not use,
1-based or gapped numbering, nested numbering the structure does not prove, a
stage's own leaves between its blocks, a scanned container whose layer axis is
not clear) raises :class:`LayerRuleError`, which lists the paths in question and
the one-line fixes (``layers=optax_ldl.trace_layers(...)``, ``name_dict``,
``set_param_lr_fun``). Each placement records its evidence (the row and key).

Paddle static names (dots, no ``/``: ``encoder.layers.3.linear1.weight``) get
exactly PaddleNLP's ``layerwise_lr_decay``: ``encoder.layers.N`` is layer N, a
name containing ``embedding`` is the embedding, anything else ratio 1.
"""

from optax_ldl._src.path_rule.names import classify, stack_container, static_name
from optax_ldl._src.path_rule.stacks import (
    ACCEPTED,
    StackSpec,
    check_stacked_arg,
    explicit_axis,
    leaf_spec,
    slice_shape,
    unrolled_name,
)
from optax_ldl._src.path_rule.table import (
    FIXES,
    OUTSIDE,
    RECOGNISED,
    RULES,
    LayerMatch,
    LayerRuleError,
    Rule,
    describe_match,
    rule_table_markdown,
)
from optax_ldl._src.path_rule.tree import path_layers

__all__ = [
    "ACCEPTED",
    "FIXES",
    "OUTSIDE",
    "RECOGNISED",
    "RULES",
    "LayerMatch",
    "LayerRuleError",
    "Rule",
    "StackSpec",
    "check_stacked_arg",
    "classify",
    "describe_match",
    "explicit_axis",
    "leaf_spec",
    "path_layers",
    "rule_table_markdown",
    "slice_shape",
    "stack_container",
    "static_name",
    "unrolled_name",
]
