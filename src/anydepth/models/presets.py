"""Model presets: ``<decoder>_<encoder>`` names -> ``ModelConfig``.

Layer indices are explicit, as released by AnyDepth / DINOv3 / Depth-Anything-V2: ``[2,5,8,11]`` for 12-block
encoders (S, S+, B), ``[4,11,17,23]`` for ViT-L (DINOv3's backward-compatible set), ``[9,19,29,39]`` for
40-block encoders (DINOv2-g, DINOv3-7B), ``[7,15,23,31]`` for the 32-block H+.
"""

from __future__ import annotations

from anydepth.models.config import ModelConfig
from anydepth.registry import MODELS

__all__ = ["ENCODER_LAYERS", "DAV2_HEADS", "DA3_LAYERS"]

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

# Depth Anything rows of the paper's Table 3 (docs/model_matrix.md): the original heads of Depth Anything V2 / 3
# on their own encoders, and SDT on DA3-Large's encoder. DAv2/DA3 tap blocks with the backbone's final LayerNorm
# (their get_intermediate_layers default). Trained by anydepth (disparity targets) every row predicts affine-invariant
# disparity; the original DA3 files, loaded with load_model, declare relative depth instead (models/weights/da3.py).
# Depth Anything V2 head configuration per size (``model_configs`` of the original run scripts)
DAV2_HEADS: dict[str, dict[str, object]] = {
    "vits": {"features": 64, "out_channels": (48, 96, 192, 384)},
    "vitb": {"features": 128, "out_channels": (96, 192, 384, 768)},
    "vitl": {"features": 256, "out_channels": (256, 512, 1024, 1024)},
}
for _size, _head in DAV2_HEADS.items():
    _enc = f"dinov2_{_size}14"
    MODELS.add(
        f"dpt_dav2_{_size}14",
        ModelConfig(
            encoder=_enc,
            decoder="dpt_dav2",
            layer_indices=ENCODER_LAYERS[_enc],
            decoder_kwargs=dict(_head),
            use_backbone_norm=True,
            name=f"dpt_dav2_{_size}14",
        ),
    )
# Tapped blocks of the Depth Anything 3 backbones (``out_layers`` of configs/da3mono-large.yaml, da3-large.yaml)
DA3_LAYERS: dict[str, tuple[int, ...]] = {"da3mono_vitl14": (4, 11, 17, 23), "da3_vitl14": (11, 15, 19, 23)}
# The names say <decoder>_da3_vitl14 (the row), not <decoder>_<encoder>: dpt_da3 runs on DA3Mono's ViT-L.
_DA3_ROWS = {
    "dpt_da3_vitl14": ("da3mono_vitl14", "dpt_da3"),
    "dualdpt_da3_vitl14": ("da3_vitl14", "dualdpt"),
    "sdt_da3_vitl14": ("da3_vitl14", "sdt"),
}
for _name, (_enc, _dec) in _DA3_ROWS.items():
    MODELS.add(
        _name,
        ModelConfig(
            encoder=_enc, decoder=_dec, layer_indices=DA3_LAYERS[_enc], use_backbone_norm=True, name=_name
        ),
    )
# Tiny versions for tests: the same code paths on dinov2_test / da3_test (2 x 32 = 64-d concatenated tokens).
_TINY_DPT = {"features": 16, "out_channels": (8, 8, 16, 16)}
for _name, _enc, _dec, _kw in (
    ("dpt_dav2_test", "dinov2_test", "dpt_dav2", _TINY_DPT),
    ("dpt_da3_test", "da3_test", "dpt_da3", _TINY_DPT),
    ("dualdpt_da3_test", "da3_test", "dualdpt", _TINY_DPT),
    ("sdt_da3_test", "da3_test", "sdt", {"fusion_channels": 32, "head_channels": (16, 8)}),
):
    MODELS.add(
        _name,
        ModelConfig(
            encoder=_enc,
            decoder=_dec,
            layer_indices=(0, 1, 2, 3),
            decoder_kwargs=dict(_kw),
            use_backbone_norm=True,
            name=_name,
        ),
    )
