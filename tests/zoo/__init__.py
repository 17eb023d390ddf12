"""A zoo of tiny random-init models from real libraries, with hand-written layer placements.

Each :class:`ZooModel` builds a model from a small config (no downloads), and states where every
float parameter sits (embedding stage, layer ``i`` of a stack, head), written by hand from the
model's architecture. ``tests/test_zoo.py`` checks ``trace_layers``, the path rule and one Adam step
against these expectations.
"""

from tests.zoo.core import Built, ZooModel, float_paths
from tests.zoo.models import ZOO

__all__ = ("ZOO", "Built", "ZooModel", "float_paths")
