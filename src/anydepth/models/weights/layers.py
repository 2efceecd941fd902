"""Which transformer blocks the decoders tap, per encoder: the one table (presets and checkpoint import read it).

The indices are the released ones: ``[2,5,8,11]`` for 12-block encoders (S, S+, B), ``[4,11,17,23]`` for ViT-L
(DINOv3's backward-compatible set, also Depth-Anything-V2 and DA3-Mono), ``[9,19,29,39]`` for 40-block encoders
(DINOv2-g, DINOv3-7B), ``[7,15,23,31]`` for the 32-block H+, DA3-Large's own ``[11,15,19,23]``
(Depth Anything 3 configs ``da3mono-large.yaml`` / ``da3-large.yaml``) and VGGT-1B's DPT-head block pairs
``[4,11,17,23]``.
"""

from __future__ import annotations

__all__ = ["ENCODER_LAYERS"]

# encoder registry name -> tapped blocks (0-based)
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
    "da3mono_vitl14": (4, 11, 17, 23),
    "da3_vitl14": (11, 15, 19, 23),
    # VGGT-1B: block pairs (frame + global) read by VGGT's DPT head (``intermediate_layer_idx``)
    "vggt_1b": (4, 11, 17, 23),
}
