"""Training engine: the one training loop and its parts.

* ``engine.config``: ``TrainConfig`` (schema of ``configs/train/*.yaml``);
* ``engine.trainer``: ``fit(cfg, run_dir)`` = ``setup`` + ``training_step`` per optimizer step + ``validate`` /
  ``save_training_checkpoint``; ``evaluate_model``;
* ``engine.data``: the config's datasets through ``anydepth.data`` (mixture, seeded augmentation, ``collate``),
  sharded resumable loading;
* ``engine.optim``: parameter groups by glob patterns, AdamW;
* ``engine.schedule``: linear warm-up + PolyLR;
* ``engine.ema``: optional exponential moving average;
* ``engine.checkpoint``: atomic training-state checkpoints and RNG capture for ``--resume``;
* ``engine.distributed``: torchrun / ``env://`` process groups (NCCL or gloo) and the sharding sampler;
* ``engine.logging``: metrics JSONL, TensorBoard, code version.

Submodules are imported on demand (``from anydepth.engine.trainer import fit``) so that importing the package
stays cheap.
"""
