"""Test set-up: eight simulated CPU devices, strict JAX, float32; the ``slow`` marker."""

import os

# Before jax is imported anywhere: the sharding tests need a mesh of 8 devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# --doctest-modules would import it, and it needs paddle, which is not a dependency.
collect_ignore = ["parity/generate_paddle_golden.py"]

# The `slow` marker: `python -m pytest -m "not slow"` is the quick subset for contributors (a
# few minutes on 2 cores, CONTRIBUTING.md); CI runs everything. Marked here, by module and test
# name (measured with --durations: a few seconds or more each on 2 cores), so that the list is
# one place; a test may also carry @pytest.mark.slow itself.
SLOW_MODULES = {
    "test_zoo.py",  # real models of six libraries
    "test_notebooks.py",  # executes the notebooks
    "test_multiprocess.py",  # two processes
    "test_sharding.py",  # eight-device meshes
    "test_properties.py",  # hypothesis searches
}
SLOW_TESTS = {
    "test_adamwdl.py": {
        "test_converges_on_a_quadratic", "test_jit_without_recompiling_on_the_second_update",
        "test_gradient_dtype_is_preserved", "test_any_optax_transform_clips",
    },
    "test_bad_inputs.py": {
        "test_debug_checks_catch_injected_values_at_run_time", "test_valid_odd_inputs_are_accepted",
    },
    "test_clipping.py": {"test_normal_range_is_bit_identical_to_paddles_formula"},
    "test_contract.py": {
        "test_state_shape_dtype_stability", "test_optimization", "test_preserve_dtype",
        "test_can_be_wrapped_in_inject_hyperparams", "test_gradient_accumulation",
        "test_multi_precision_updates_compose_with_optax_wrappers",
    },
    "test_integrations.py": {
        "test_orbax_restore_in_fresh_process_continues_bit_identically",
        "test_nnx_optimizer_trains_a_transformer_in_nnx_jit",
        "test_linen_train_state_layer_ratios_match_paddle_rule",
        "test_linen_train_state_jitted_steps_equal_a_manual_optax_loop",
        "test_apply_if_finite_skips_a_nan_step_as_if_it_never_happened",
    },
    "test_layer_scale.py": {"test_layerwise_update_is_the_inner_update_times_the_layer_ratio"},
    "test_parity.py": {"test_trajectory_matches_paddle"},
    "test_stacked.py": {"test_flax_scan_equals_unrolled", "test_stacked_axis_not_zero"},
    "test_tracing.py": {
        "test_cnn_stages_numbered_straight_through",
        "test_vit_class_token_patch_embedding_sequential_head",
        "test_remat_and_cond_inside_a_block", "test_nn_scan_stack", "test_unrolled_transformer",
    },
    "test_wrappers.py": {"test_master_weights_follow_the_float32_run"},
}


def pytest_collection_modifyitems(items):
  for item in items:
    name = item.path.name
    if name in SLOW_MODULES or getattr(item, "originalname", None) in SLOW_TESTS.get(name, ()):
      item.add_marker(pytest.mark.slow)
