"""Weight conversion, in one place: files of other codebases -> the state dicts of ``anydepth`` modules.

* :mod:`~anydepth.models.weights.layers`: ``ENCODER_LAYERS``, the one table of tapped blocks per encoder;
* :mod:`~anydepth.models.weights.backbones`: DINOv3 / DINOv2 backbones in foreign layouts (transformers, timm,
  Depth-Anything-V2) -> Meta's parameter names (pure functions on state dicts);
* :mod:`~anydepth.models.weights.loading`: reading checkpoint files (never unpickling), exact loading into a
  backbone, the content hash that identifies encoder weights;
* :mod:`~anydepth.models.weights.official`: official AnyDepth heads and checkpoints <-> our decoders (pure);
* :mod:`~anydepth.models.weights.vggt`: VGGT's ``model.pt`` (aggregator + depth head; other heads dropped, listed);
* :mod:`~anydepth.models.weights.dav2`: Depth Anything V2 ``depth_anything_v2_vit{s,b,l}.pth`` (ViT + DPT head, whole);
* :mod:`~anydepth.models.weights.da3`: Depth Anything 3 ``model.safetensors`` (ViT + DPT / Dual-DPT head; camera
  modules dropped, listed).

Nothing here builds a model: ``anydepth.models.factory`` and ``anydepth.models.checkpoint`` do, using these.
A new checkpoint family gets its own module here (pure state-dict mapping, exact: unknown keys are errors).
"""
