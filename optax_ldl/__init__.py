"""optax_ldl: layer-wise learning-rate decay for Optax (PaddleNLP's AdamWDL and more)."""

from optax_ldl._src.adamwdl import adamwdl
from optax_ldl._src.clipping import clip_grad_by_global_norm, clip_grad_by_norm, clip_grad_by_value
from optax_ldl._src.custom_rule import Param, layerwise_lr_decay
from optax_ldl._src.diagnostics import Description, Row, describe
from optax_ldl._src.drift import Drift, layer_drift
from optax_ldl._src.hyperparams import hyperparams
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.layer_map import LayerMap, Placement
from optax_ldl._src.layer_metrics import layer_metrics
from optax_ldl._src.layer_schedules import LayerSchedule, backbone_ramp, freeze, gradual_unfreezing
from optax_ldl._src.layerwise import layerwise
from optax_ldl._src.model_plan import path_layers
from optax_ldl._src.paddle import (
    AdamWDL,
    ClipGradByGlobalNorm,
    ClipGradByNorm,
    ClipGradByValue,
    InverseSquareRootSchedule,
)
from optax_ldl._src.path_rule import LayerRuleError, classify, rule_table_markdown
from optax_ldl._src.plan import LayerPlan
from optax_ldl._src.scale import (
    ScaleByLayerRatioState,
    ScaleByLayerScheduleState,
    scale_by_layer_ratio,
)
from optax_ldl._src.schedules import inverse_sqrt_schedule
from optax_ldl._src.sweep import grid as sweep_grid
from optax_ldl._src.sweep import sweep_init, sweep_member
from optax_ldl._src.trace import trace_layers
from optax_ldl._src.track_metrics import TrackLayerMetricsState, track_layer_metrics
from optax_ldl._src.verify import RatioCheck, Verification, verify
from optax_ldl._src.weight_decay import weight_decay_filter
from optax_ldl._src.wrappers import (
    LazyRowsState,
    MasterWeightsState,
    float_leaves_only,
    lazy_rows,
    master_weights,
)

__version__ = "0.2.0"

__all__ = (
    "AdamWDL",
    "ClipGradByGlobalNorm",
    "ClipGradByNorm",
    "ClipGradByValue",
    "Description",
    "Drift",
    "InverseSquareRootSchedule",
    "LayerDecay",
    "LayerMap",
    "LayerPlan",
    "LayerRuleError",
    "LayerSchedule",
    "LazyRowsState",
    "MasterWeightsState",
    "Param",
    "Placement",
    "RatioCheck",
    "Row",
    "ScaleByLayerRatioState",
    "ScaleByLayerScheduleState",
    "TrackLayerMetricsState",
    "Verification",
    "adamwdl",
    "backbone_ramp",
    "classify",
    "clip_grad_by_global_norm",
    "clip_grad_by_norm",
    "clip_grad_by_value",
    "describe",
    "float_leaves_only",
    "freeze",
    "gradual_unfreezing",
    "hyperparams",
    "inverse_sqrt_schedule",
    "lazy_rows",
    "layer_drift",
    "layer_metrics",
    "layerwise",
    "layerwise_lr_decay",
    "master_weights",
    "path_layers",
    "rule_table_markdown",
    "scale_by_layer_ratio",
    "sweep_grid",
    "sweep_init",
    "sweep_member",
    "trace_layers",
    "track_layer_metrics",
    "verify",
    "weight_decay_filter",
)
