"""``TrainConfig``: the schema of ``configs/train/*.yaml`` (frozen dataclasses, loaded by ``anydepth.config``).

Every key of a training YAML lives in one of these dataclasses; unknown keys are rejected with their full path.
Values marked *paper* come from the AnyDepth paper; everything else is a documented project decision
(docs/training.md, "Decisions on points the paper leaves open").

Example:
    >>> from anydepth.config import load_config
    >>> cfg = load_config(TrainConfig, ["configs/train/cpu_tiny.yaml"], ["optim.lr=5e-4"])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ModelSection",
    "DatasetSpec",
    "AugmentSection",
    "DataSection",
    "LossSection",
    "ParamGroupSection",
    "OptimSection",
    "ScheduleSection",
    "EMASection",
    "ValSection",
    "TrainSection",
    "TrainConfig",
    "PRECISIONS",
]

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ModelSection:
    """What network is trained.

    Attributes:
        preset: ``anydepth.list_models()`` name, e.g. ``sdt_dinov3_vitb16`` (AnyDepth-B) or ``dpt_dinov3_vitb16``.
        encoder_weights: local file with pretrained encoder weights (Meta ``.pth``, HF, timm, DAv2 layouts);
            ``null`` = random encoder (tests, demo). Never downloaded.
        freeze_encoder: keep the encoder frozen and run it under ``no_grad`` (paper: frozen). ``false`` trains it
            with ``optim.encoder_lr``.
        overrides: extra ``ModelConfig`` fields (``decoder_kwargs``, ``encoder_kwargs``, ``use_backbone_norm``...).
        init_checkpoint: optional model checkpoint (``.safetensors``) whose weights initialise the model.
        output_bias_init: value for the bias of the decoder's last 1-channel convolution at initialisation
            (``null`` = PyTorch default). The output is ``ReLU(raw) + 0.001``; with PyTorch's default init the
            raw output is nearly constant and its sign is that of the random bias, so for about half of the seeds
            the ReLU is closed on every pixel and no gradient ever flows. A positive bias opens it.
    """

    preset: str = "sdt_test"
    encoder_weights: str | None = None
    freeze_encoder: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str | None = None
    output_bias_init: float | None = 1.0


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a mixture.

    Attributes:
        name: ``anydepth.registry.DATASETS`` name (``hypersim``, ``vkitti2``, ``blendedmvs``, ``irs``,
            ``tartanair``, ``synthetic``, ...).
        root: dataset root directory (placeholder paths in the shipped configs; see docs/data.md).
        split_file: list file with one ``rgb_path depth_path`` pair per line (the paper's filtered lists).
        weight: the dataset's share of the samples drawn (``anydepth.data.mixture``: the one meaning of weights),
            independent of its size; give it on every dataset or on none. None everywhere (the default, the
            paper's recipe) = the plain concatenation, every sample once per epoch (see
            ``engine.data.build_datasets``).
        kwargs: extra constructor arguments of the dataset class.
    """

    name: str = "synthetic"
    root: str | None = None
    split_file: str | None = None
    weight: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AugmentSection:
    """Training augmentation (paper: "flipping and rotation"; parameters follow DINOv3's depth recipe).

    Attributes:
        hflip: probability of a horizontal flip.
        rotate_prob: probability of a random rotation.
        rotate_deg: maximum absolute rotation angle in degrees.
        brightness: brightness factor range, e.g. ``[0.9, 1.1]`` (DINOv3); ``null`` = off (the paper lists
            only flips and rotations).

    The geometric chain (``anydepth.data.transforms.build_transforms``): resize the short side to the crop size,
    random rotation, random crop to ``data.size``, horizontal flip.
    """

    hflip: float = 0.5
    rotate_prob: float = 0.5
    rotate_deg: float = 2.5
    brightness: tuple[float, float] | None = None


@dataclass(frozen=True)
class DataSection:
    """Training and validation data.

    Attributes:
        train: the training mixture.
        val: held-out datasets for periodic validation (empty = no validation).
        size: training crop ``[H, W]`` in pixels (paper: 768x768); multiples of the patch size.
        val_size: validation input ``[H, W]`` (images are resized to it; default ``size``).
        augment: augmentation settings.
        num_workers: data-loader worker processes per rank.
        far_plane: metres; metric depth is clipped to it before inversion (paper: 100 m).
    """

    train: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    val: list[DatasetSpec] = field(default_factory=list)
    size: tuple[int, int] = (768, 768)
    val_size: tuple[int, int] | None = None
    augment: AugmentSection = field(default_factory=AugmentSection)
    num_workers: int = 4
    far_plane: float = 100.0


@dataclass(frozen=True)
class LossSection:
    """Loss settings (``anydepth.losses.DepthLoss``; paper: L_ssi + 2 L_gm on disparity).

    Attributes:
        ssi: ``"robust"`` (median/MAD normalisation, L1; DAv2/MiDaS) or ``"lstsq"`` (least squares, L2).
        trim: fraction of the largest per-image residuals dropped from the SSI term.
        gradient_weight: weight of the gradient-matching term (paper: 2).
        gradient_scales: number of gradient scales (4).
        reduction: ``"batch"`` (sum over the batch / total valid pixels) or ``"image"`` (mean of per-image).
    """

    ssi: str = "robust"
    trim: float = 0.0
    gradient_weight: float = 2.0
    gradient_scales: int = 4
    reduction: str = "batch"


@dataclass(frozen=True)
class ParamGroupSection:
    """A parameter group selected by a glob on parameter names (``lr``/``weight_decay`` null = base values)."""

    pattern: str = "decoder.*"
    lr: float | None = None
    weight_decay: float | None = None


@dataclass(frozen=True)
class OptimSection:
    """Optimizer (paper: AdamW, LR 1e-3 for the decoder).

    Attributes:
        name: ``adamw`` | ``adam`` | ``sgd``.
        lr: base LR (decoder).
        encoder_lr: LR of the encoder when ``model.freeze_encoder`` is false (ignored otherwise).
        weight_decay, betas, eps: AdamW hyper-parameters (DINOv3 depth defaults: 0.01, (0.9, 0.999)).
        groups: extra parameter groups, first match wins; an ``encoder.*`` group with ``encoder_lr`` is
            appended automatically when the encoder is trained.
        no_weight_decay: globs of parameter names without weight decay (e.g. ``"*.bias"``).
        grad_clip: max global gradient norm (0 = no clipping; DINOv3 depth default: 35).
    """

    name: str = "adamw"
    lr: float = 1e-3
    encoder_lr: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    groups: list[ParamGroupSection] = field(default_factory=lambda: [ParamGroupSection("decoder.*")])
    no_weight_decay: list[str] = field(default_factory=list)
    grad_clip: float = 35.0


@dataclass(frozen=True)
class ScheduleSection:
    """LR schedule (paper: PolyLR power 0.9, linear warm-up over the first 2 epochs).

    Attributes:
        warmup_epochs: warm-up length in epochs (converted to optimizer steps).
        warmup_steps: explicit warm-up steps; overrides ``warmup_epochs`` when set.
        power: poly power.
        start_factor: LR multiplier at step 0.
        end_factor: LR multiplier reached at the end.
    """

    warmup_epochs: float = 2.0
    warmup_steps: int | None = None
    power: float = 0.9
    start_factor: float = 0.001
    end_factor: float = 0.0


@dataclass(frozen=True)
class EMASection:
    """Optional EMA of the trained weights (off in the paper recipes); used for validation and the best model."""

    enabled: bool = False
    decay: float = 0.999
    warmup: bool = True


@dataclass(frozen=True)
class ValSection:
    """Periodic validation on ``data.val``.

    Attributes:
        every_steps: validate every N optimizer steps (0 = only at the end).
        max_samples: cap on validation samples (0 = all).
        batch_size: validation batch size per rank.
        alignment: ``least_square_disparity`` (fit in disparity space, paper-style) or ``least_square``.
        min_depth, max_depth: metres; predictions are clipped to this range and GT outside it is ignored.
        metric: metric that selects the best checkpoint (``abs_rel``: lower is better; ``delta1``: higher).
    """

    every_steps: int = 0
    max_samples: int = 0
    batch_size: int = 4
    alignment: str = "least_square_disparity"
    min_depth: float = 1e-3
    max_depth: float = 100.0
    metric: str = "abs_rel"


@dataclass(frozen=True)
class TrainSection:
    """Run length, batch, precision and bookkeeping.

    Attributes:
        epochs: passes over the training mixture (paper: 5).
        max_steps: hard cap on optimizer steps (0 = from ``epochs``); the schedule length follows it.
        batch_size: micro-batch size PER PROCESS (global batch = batch_size x grad_accum x world size).
        grad_accum: micro-batches accumulated per optimizer step.
        precision: ``fp32`` | ``bf16`` (autocast) | ``fp16`` (autocast + GradScaler).
        seed: global seed (model init, data order, augmentation).
        log_every: steps between train-metric records / progress-bar updates.
        ckpt_every: steps between training-state checkpoints (0 = only at the end).
        keep_last: number of ``step_<N>.pt`` checkpoints kept (0 = all).
        tensorboard: also write TensorBoard events (if the package is installed).
        deterministic: ask torch for deterministic kernels (``torch.use_deterministic_algorithms``).
    """

    epochs: float = 5.0
    max_steps: int = 0
    batch_size: int = 2
    grad_accum: int = 1
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000
    keep_last: int = 2
    tensorboard: bool = True
    deterministic: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """A complete training recipe (``configs/train/*.yaml``)."""

    name: str = "run"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    ema: EMASection = field(default_factory=EMASection)
    val: ValSection = field(default_factory=ValSection)
    train: TrainSection = field(default_factory=TrainSection)
    notes: str = ""

    def __post_init__(self) -> None:
        t = self.train
        if t.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {list(PRECISIONS)}, got {t.precision!r}")
        if t.batch_size < 1 or t.grad_accum < 1:
            raise ValueError(
                f"train.batch_size and train.grad_accum must be >= 1, got {t.batch_size}/{t.grad_accum}"
            )
        if t.epochs <= 0 and t.max_steps <= 0:
            raise ValueError("set train.epochs > 0 or train.max_steps > 0")
        if self.loss.ssi not in ("robust", "lstsq"):
            raise ValueError(f"loss.ssi must be 'robust' or 'lstsq', got {self.loss.ssi!r}")
        if self.loss.reduction not in ("batch", "image"):
            raise ValueError(f"loss.reduction must be 'batch' or 'image', got {self.loss.reduction!r}")
        if self.val.alignment not in ("least_square_disparity", "least_square"):
            raise ValueError(
                f"val.alignment must be 'least_square_disparity' or 'least_square', got {self.val.alignment!r}"
            )
        if self.val.metric not in ("abs_rel", "delta1"):
            raise ValueError(f"val.metric must be 'abs_rel' or 'delta1', got {self.val.metric!r}")
        if not self.data.train:
            raise ValueError("data.train must list at least one dataset")
        for key, hw in (("data.size", self.data.size), ("data.val_size", self.data.val_size)):
            if hw is not None and (len(hw) != 2 or min(hw) < 1):
                raise ValueError(f"{key} must be [H, W] with positive sizes, got {list(hw)}")
        if self.optim.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be >= 0, got {self.optim.grad_clip}")
