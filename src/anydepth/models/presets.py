"""Model presets: ``<decoder>_<encoder>`` names -> ``ModelConfig``.

Layer indices come from the one table ``anydepth.models.weights.layers.ENCODER_LAYERS`` (the released ones). Every
DINOv3 / DINOv2 encoder of the table gets an ``sdt_`` and a ``dpt_`` preset.
"""

from __future__ import annotations

from anydepth.models.config import ModelConfig
from anydepth.models.weights.layers import ENCODER_LAYERS
from anydepth.registry import MODELS

__all__ = ["ENCODER_LAYERS"]

for _enc, _layers in ENCODER_LAYERS.items():
    if not _enc.startswith(("dinov3_", "dinov2_")):
        continue
    for _dec in ("sdt", "dpt"):
        _name = f"{_dec}_{_enc}"
        MODELS.add(_name, ModelConfig(encoder=_enc, decoder=_dec, layer_indices=_layers, name=_name))

# Tiny presets for tests and CPU smoke runs: the real encoder/decoder code paths at toy widths.
MODELS.add(
    "sdt_test",
    ModelConfig(
        encoder="dinov3_test",
        decoder="sdt",
        layer_indices=(0, 1, 2, 3),
        decoder_kwargs={"fusion_channels": 32, "head_channels": (16, 8)},
        name="sdt_test",
    ),
)
MODELS.add(
    "dpt_test",
    ModelConfig(
        encoder="dinov3_test",
        decoder="dpt",
        layer_indices=(0, 1, 2, 3),
        decoder_kwargs={"channels": 32, "post_process_channels": (16, 16, 16, 16)},
        name="dpt_test",
    ),
)
MODELS.add(
    "sdt_dinov2_test",
    ModelConfig(
        encoder="dinov2_test",
        decoder="sdt",
        layer_indices=(0, 1, 2, 3),
        decoder_kwargs={"fusion_channels": 32, "head_channels": (16, 8)},
        name="sdt_dinov2_test",
    ),
)

# VGGT-1B rows of the paper's Table 3 (docs/model_matrix_vggt.md). The encoder is VGGT's aggregator on one image;
# its 2048-d features are the concatenated frame + global tokens of block pairs [4, 11, 17, 23], the pairs VGGT's
# DPT head reads. ``dpt_vggt_1b`` = VGGT's own DPT head (decoder ``dpt_vggt``), ``sdt_vggt_1b`` = SDT. Both are
# trained from scratch on the project's disparity targets, hence the default output space (affine-invariant
# disparity); VGGT's released depth model (``model.pt``) loads with ``anydepth.load_model`` as depth instead.
_VGGT_LAYERS = ENCODER_LAYERS["vggt_1b"]
MODELS.add(
    "dpt_vggt_1b",
    ModelConfig(encoder="vggt_1b", decoder="dpt_vggt", layer_indices=_VGGT_LAYERS, name="dpt_vggt_1b"),
)
MODELS.add(
    "sdt_vggt_1b",
    ModelConfig(encoder="vggt_1b", decoder="sdt", layer_indices=_VGGT_LAYERS, name="sdt_vggt_1b"),
)
MODELS.add(
    "dpt_vggt_test",
    ModelConfig(
        encoder="vggt_test",
        decoder="dpt_vggt",
        layer_indices=(0, 1, 2, 3),
        decoder_kwargs={"features": 8, "out_channels": (8, 8, 16, 16)},
        name="dpt_vggt_test",
    ),
)
MODELS.add(
    "sdt_vggt_test",
    ModelConfig(
        encoder="vggt_test",
        decoder="sdt",
        layer_indices=(0, 1, 2, 3),
        decoder_kwargs={"fusion_channels": 32, "head_channels": (16, 8)},
        name="sdt_vggt_test",
    ),
)
