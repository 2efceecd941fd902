"""Model presets: ``<decoder>_<encoder>`` names -> ``ModelConfig``.

Layer indices come from the one table ``anydepth.models.weights.layers.ENCODER_LAYERS`` (the released ones). Every
DINOv3 / DINOv2 encoder of the table gets an ``sdt_`` and a ``dpt_`` preset.
"""

from __future__ import annotations

from anydepth.models.config import ModelConfig
from anydepth.models.weights.layers import ENCODER_LAYERS
from anydepth.registry import MODELS

__all__ = ["ENCODER_LAYERS", "DAV2_HEADS"]

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
            encoder=_enc, decoder=_dec, layer_indices=ENCODER_LAYERS[_enc], use_backbone_norm=True, name=_name
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

# VGGT-1B rows of the paper's Table 3 (docs/model_matrix.md, VGGT-1B rows). The encoder is VGGT's aggregator on one image;
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
