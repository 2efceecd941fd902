"""``DepthModel``: normalise -> frozen encoder -> decoder. Its ``forward`` is the exportable network."""

from __future__ import annotations

import torch
from torch import nn

from anydepth.models.config import ModelConfig
from anydepth.models.decoders.base import Decoder
from anydepth.models.encoders.base import EncoderWrapper
from anydepth.types import DepthSpace

__all__ = ["DepthModel"]


class DepthModel(nn.Module):
    """A monocular depth network.

    Args:
        encoder: the (frozen) ViT encoder wrapper.
        decoder: a registered decoder built for ``encoder.embed_dims``.
        config: the ``ModelConfig`` that built this model (kept for checkpoints).

    Attributes:
        output_space: the ``DepthSpace`` of the raw output (affine-invariant disparity for AnyDepth presets).
        patch_size: input H and W must be multiples of this.
    """

    image_mean: torch.Tensor
    image_std: torch.Tensor

    def __init__(self, encoder: EncoderWrapper, decoder: Decoder, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = config
        # Where the encoder weights came from ({"path", "sha256"}), set by create_model/load_model; None = random.
        self.encoder_source: dict[str, str] | None = None
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def output_space(self) -> DepthSpace:
        return self.config.output_space

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict a dense map.

        Args:
            x: float ``[B,3,H,W]`` RGB in [0, 1]; H and W multiples of ``patch_size``.

        Returns:
            ``[B,1,H,W]`` raw prediction in ``output_space`` (AnyDepth: affine-invariant disparity, > 0).
        """
        h, w = x.shape[-2], x.shape[-1]  # kept symbolic so torch.export / ONNX keep H and W dynamic
        x = (x - self.image_mean.to(x.dtype)) / self.image_std.to(x.dtype)
        enc = self.encoder(x)
        return self.decoder(enc, (h, w))

    def forward_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of the decoder, for heads with more than the depth map (not exported, not timed).

        Args:
            x: as for ``forward``.

        Returns:
            The decoder's ``forward_outputs`` (e.g. Depth Anything 3: ``depth``, ``depth_conf``, ``sky``, ``ray``,
            ``ray_conf``; shapes in the decoder's docs); ``{"depth": forward(x)}`` for decoders without one.
            ``"depth"`` is always ``forward(x)``, in ``output_space``.
        """
        outputs = getattr(self.decoder, "forward_outputs", None)
        if outputs is None:
            return {"depth": self(x)}
        h, w = x.shape[-2], x.shape[-1]
        x = (x - self.image_mean.to(x.dtype)) / self.image_std.to(x.dtype)
        result: dict[str, torch.Tensor] = outputs(self.encoder(x), (h, w))
        return result
