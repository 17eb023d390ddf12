"""Test set-up: eight simulated CPU devices, strict JAX, float32."""

import os

# Before jax is imported anywhere: the sharding tests need a mesh of 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# --doctest-modules would import it, and it needs paddle, which is not a dependency.
collect_ignore = ["parity/generate_paddle_golden.py"]
