"""Loading evaluation-network weights from local files, strictly, with errors a person can act on.

Weights cannot be downloaded here, so every metric network (I3D, FAST-VQA, CLIP) takes a local path
*or* runs with a seeded random initialisation. Results from random weights exercise the machinery
only; callers tag them ``weights=random`` (see :func:`weights_tags`).

Checkpoints are read with ``safetensors`` or ``torch.load(weights_only=True)`` — never by unpickling
arbitrary objects.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import torch

# Containers the reference checkpoints wrap their tensors in (FAST-VQA: "state_dict"; others: "model").
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_SHOW = 8  # mismatched keys quoted in an error message


class WeightsError(ValueError):
    """A weight file is missing, unreadable, or does not fit the architecture."""


class WeightsSource(StrEnum):
    RANDOM = "random"  # seeded random init: numbers are not comparable to the paper's
    FILE = "file"  # a local checkpoint loaded with strict key/shape checking


def read_state_dict(path: str | Path, *, what: str, expected_name: str) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint (``.safetensors`` or a torch file), unwrapped and de-``module.``-ed.

    ``what`` names the network and ``expected_name`` the published file (e.g. ``i3d_pretrained_400.pt``)
    so a missing file is reported as what to put where.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(
            f"{what} weights not found at {str(p)!r}: expected the published file {expected_name!r} "
            f"(download it on a machine with internet access and pass its local path), or use the random preset"
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p), device="cpu")
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, or a pickle that needs arbitrary classes
        raise WeightsError(f"cannot read {what} weights {str(p)!r} ({type(e).__name__}: {e})") from e
    for key in _WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{what} weights {str(p)!r} do not hold a flat state_dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel/DDP wrapper
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def check_state_dict(module: torch.nn.Module, sd: dict[str, torch.Tensor], *, what: str,
                     ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`WeightsError` naming the first missing / unexpected / mis-shaped keys.

    ``ignore`` lists key suffixes that may be absent from old checkpoints (e.g. BatchNorm's
    ``num_batches_tracked``, which PyTorch fills in itself).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith(ignore)]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first: {missing[:_SHOW]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:_SHOW]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches, first: {shapes[:_SHOW]}")
    if problems:
        raise WeightsError(f"{what} weights do not match the architecture: " + "; ".join(problems))


def load_strict(module: torch.nn.Module, path: str | Path, *, what: str, expected_name: str,
                ignore: tuple[str, ...] = ("num_batches_tracked",)) -> torch.nn.Module:
    """Read ``path`` and load it into ``module`` with strict checking; returns the module in eval mode."""
    sd = read_state_dict(path, what=what, expected_name=expected_name)
    check_state_dict(module, sd, what=what, ignore=ignore)
    module.load_state_dict(sd, strict=False)  # strictness enforced above, with better messages
    return module.eval()


def weights_tags(source: WeightsSource | str, path: str | Path | None = None, *, prefix: str = "") -> dict[str, str]:
    """MLflow/Dagster tags recording which weights produced a number (``weights=random`` when random)."""
    source = WeightsSource(source)
    tags = {f"{prefix}weights": source.value}
    if source is WeightsSource.FILE and path is not None:
        tags[f"{prefix}weights_path"] = str(path)
    return tags
