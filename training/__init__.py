"""Training of the DFGN: typed config, trainer (DDP/FSDP, bf16, EMA), checkpoint resume, the difficulty-adaptive
curriculum (paper Sec. 3.3) and MLflow tracking. ``python -m training`` is the torchrun entry point; nothing here
imports Dagster, so training runs under plain torchrun.
"""
