"""The zoo: every entry, from every library."""

from __future__ import annotations

from tests.zoo import flax_models, hf, others

ZOO = (*hf.MODELS, *flax_models.MODELS, *others.MODELS)
