"""The network and its conditioning interface: DFGN U-Net + STI layers, text encoder, autoencoder, CLIP towers,
tasks and condition masks, diffusion schedule and the sampling pipeline.

Keep this package import-light (no torch at import time): ``model.masks`` is imported by pure-numpy code.
"""

