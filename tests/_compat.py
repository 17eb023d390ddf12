"""Names the tests use that moved between the supported jax versions."""

import jax
from jax import experimental as jax_experimental

# jax.enable_x64 is new in jax 0.8 (jax.experimental.enable_x64, deprecated there, before);
# jax.set_mesh in 0.7.1 (jax.sharding.use_mesh before).
enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax_experimental.enable_x64
set_mesh = jax.set_mesh if hasattr(jax, "set_mesh") else jax.sharding.use_mesh
