"""Model presets: ``<decoder>_<encoder>`` names -> ``ModelConfig``.

Layer indices are explicit, as released by AnyDepth / DINOv3 / Depth-Anything-V2: ``[2,5,8,11]`` for 12-block
encoders (S, S+, B), ``[4,11,17,23]`` for ViT-L (DINOv3's backward-compatible set), ``[9,19,29,39]`` for
40-block encoders (DINOv2-g, DINOv3-7B), ``[7,15,23,31]`` for the 32-block H+.
"""

from __future__ import annotations

from anydepth.models.config import ModelConfig
from anydepth.registry import MODELS

__all__ = ["ENCODER_LAYERS"]

# encoder registry name -> tapped blocks
ENCODER_LAYERS: dict[str, tuple[int, ...]] = {
    "dinov3_vits16": (2, 5, 8, 11),
    "dinov3_vitsplus16": (2, 5, 8, 11),
    "dinov3_vitb16": (2, 5, 8, 11),
    "dinov3_vitl16": (4, 11, 17, 23),
    "dinov3_vith16plus": (7, 15, 23, 31),
    "dinov3_vit7b16": (9, 19, 29, 39),
    "dinov2_vits14": (2, 5, 8, 11),
    "dinov2_vitb14": (2, 5, 8, 11),
    "dinov2_vitl14": (4, 11, 17, 23),
    "dinov2_vitg14": (9, 19, 29, 39),
    "dinov2_vits14_reg": (2, 5, 8, 11),
    "dinov2_vitb14_reg": (2, 5, 8, 11),
    "dinov2_vitl14_reg": (4, 11, 17, 23),
    "dinov2_vitg14_reg": (9, 19, 29, 39),
}

for _enc, _layers in ENCODER_LAYERS.items():
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
_VGGT_LAYERS = (4, 11, 17, 23)
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
