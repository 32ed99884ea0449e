"""Dagster assets, one module per pipeline stage: thin ``@asset`` functions, their ``Config``s and checks over the
library packages (data, model, training, evaluation, ablation).
"""
