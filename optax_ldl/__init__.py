"""optax_ldl: AdamW with layer-wise learning-rate decay for Optax (PaddleNLP's AdamWDL)."""

from optax_ldl._src.adamwdl import (
    LazyRowsState,
    MasterWeightsState,
    ScaleByLayerRatioState,
    adamwdl,
    float_leaves_only,
    lazy_rows,
    master_weights,
    scale_by_layer_ratio,
)
from optax_ldl._src.clipping import clip_grad_by_global_norm, clip_grad_by_norm, clip_grad_by_value
from optax_ldl._src.diagnostics import Description, Row, describe
from optax_ldl._src.layer_rules import (
    RULE_TABLE,
    LayerGroups,
    LayerMatch,
    Param,
    classify,
    layer_groups,
    layerwise_lr_decay,
    path_name,
)
from optax_ldl._src.paddle import (
    AdamWDL,
    ClipGradByGlobalNorm,
    ClipGradByNorm,
    ClipGradByValue,
    InverseSquareRootSchedule,
)
from optax_ldl._src.schedules import inverse_sqrt_schedule
from optax_ldl._src.stacked import StackedRatio, scale_by_stacked_ratio

__version__ = "0.1.0"

__all__ = (
    "AdamWDL",
    "ClipGradByGlobalNorm",
    "ClipGradByNorm",
    "ClipGradByValue",
    "Description",
    "InverseSquareRootSchedule",
    "LayerGroups",
    "LayerMatch",
    "LazyRowsState",
    "MasterWeightsState",
    "Param",
    "RULE_TABLE",
    "Row",
    "ScaleByLayerRatioState",
    "StackedRatio",
    "adamwdl",
    "classify",
    "clip_grad_by_global_norm",
    "clip_grad_by_norm",
    "clip_grad_by_value",
    "describe",
    "float_leaves_only",
    "inverse_sqrt_schedule",
    "lazy_rows",
    "layer_groups",
    "layerwise_lr_decay",
    "master_weights",
    "path_name",
    "scale_by_layer_ratio",
    "scale_by_stacked_ratio",
)
