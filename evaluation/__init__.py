"""Evaluation metrics (FVD, VQA, CLIP similarity). Never imports ``assets`` or ``pipelines``."""
