"""CLIP loading never reaches the network: an uncached tag is a clear error, the offline guard really holds."""

from __future__ import annotations

import pytest


def test_an_uncached_tag_fails_with_a_clear_error_and_never_touches_the_network(tmp_path, monkeypatch):
    """huggingface_hub is imported first (it reads HF_HUB_OFFLINE once, at import): the guard must still hold."""
    import socket

    import huggingface_hub.constants as hub_constants

    from model.clip import ClipSpec, hub_offline, load_clip

    connects = []
    real_connect = socket.socket.connect

    def watch(self, address):
        connects.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", watch)
    before = hub_constants.HF_HUB_OFFLINE
    with hub_offline():
        assert hub_constants.HF_HUB_OFFLINE is True
    assert hub_constants.HF_HUB_OFFLINE == before
    with pytest.raises(ValueError, match="is not in the cache .* nothing is downloaded"):
        load_clip(ClipSpec(model="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path), device="cpu"))
    assert [a for a in connects if not (isinstance(a, str) or a[0] in ("127.0.0.1", "::1"))] == []
