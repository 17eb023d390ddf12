"""The zoo: every entry, from every library."""

from __future__ import annotations

from tests.zoo import flax_models, hf, hf_more, jax_more, keras_more, others

ZOO = (*hf.MODELS, *flax_models.MODELS, *others.MODELS,
       *hf_more.MODELS, *jax_more.MODELS, *keras_more.MODELS)
