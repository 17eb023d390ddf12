"""optax_ldl: layer-wise learning-rate decay for Optax (PaddleNLP's AdamWDL and more)."""

from optax_ldl._src.adamwdl import adamwdl
from optax_ldl._src.clipping import clip_grad_by_global_norm, clip_grad_by_norm, clip_grad_by_value
from optax_ldl._src.custom_rule import Param, layerwise_lr_decay
from optax_ldl._src.diagnostics import Description, Row, describe
from optax_ldl._src.drift import Drift, layer_drift
from optax_ldl._src.hyperparams import hyperparams
from optax_ldl._src.layer_decay import LayerDecay
from optax_ldl._src.layer_map import LayerMap, Placement
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
from optax_ldl._src.scale import ScaleByLayerRatioState, scale_by_layer_ratio
from optax_ldl._src.schedules import inverse_sqrt_schedule
from optax_ldl._src.trace import trace_layers
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
    "LazyRowsState",
    "MasterWeightsState",
    "Param",
    "Placement",
    "Row",
    "ScaleByLayerRatioState",
    "adamwdl",
    "classify",
    "clip_grad_by_global_norm",
    "clip_grad_by_norm",
    "clip_grad_by_value",
    "describe",
    "float_leaves_only",
    "hyperparams",
    "inverse_sqrt_schedule",
    "lazy_rows",
    "layer_drift",
    "layerwise",
    "layerwise_lr_decay",
    "master_weights",
    "path_layers",
    "rule_table_markdown",
    "scale_by_layer_ratio",
    "trace_layers",
    "weight_decay_filter",
)
