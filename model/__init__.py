"""RDTF model-side code: media decoding, synthetic data, network, masks, curriculum, training, sampling.

Keep this package import-light (no torch at import time): ingest worker processes import
``model.media`` and must start fast.
"""
