"""The five training variants of the paper's module ablation (Table 3) and curriculum ablation (Table 4).

Pure data: an enum of the variants and ``variant_overrides(variant) -> TrainConfig overrides``. Everything else
of a run (steps, batch, lr, data, seed list, evaluation) is shared; ``benchmarks/ablation.py`` builds the
configs and the test asserts on the logged MLflow params that variants differ only in these switches.

| variant | paper row (I&T->V) | temporal layer | DDU (``dual_mask``) | frames | curriculum |
|---|---|---|---|---|---|
| ``dfgn_3dconv`` | Table 3 "DFGN(3D-Conv)" | ``conv3d`` | off | ``uniform`` | ``none`` |
| ``dfgn_sti`` | Table 3 "DFGN" | ``sti`` | off | ``uniform`` | ``none`` |
| ``sti_ddu`` | Table 3 "DFGN (w/ DDU)" = Table 4 "RDTF (w/o CL)" | ``sti`` | on | ``cluster`` | ``none`` |
| ``sti_ddu_lcl`` | Table 4 "RDTF (w/ LCL)" | ``sti`` | on | ``cluster`` | ``linear`` |
| ``sti_ddu_dcl`` | Table 3 "DFGN (w/ DDU & w/ DCL)" = Table 4 "RDTF (w/ DCL)" | ``sti`` | on | ``cluster`` | ``adaptive`` |

What "without DDU" means here (paper, Method, "Dual-mask based Data Utilization Strategy", and Fig. 3). DDU
has two parts: (1) the *condition mask*, which turns one clip into many training tasks (IPT / PDT / GRT at
every masked length, Table 7), and (2) *cluster-based frame extraction with a random k* (k ~ U[3, 8],
Table 6) together with the *loss mask* on the first k frames, which the paper contrasts with "the
traditional method of extracting frames at equal intervals", where "less data will be generated and most
frames will be lost". A DFGN without DDU therefore trains

* one task only, the one Tables 3 and 4 evaluate: I&T->V with Table 7's generation mask
  ``[1 0 0 0 0 0 0 0]`` (frame 0 + caption given, ``model.masks.first_frame_condition``); no task or
  length sampling, so the curriculum has nothing to schedule (mode ``none``);
* on equal-interval clips (``frame_extraction = uniform``, ``data.loader.uniform_frames``): F = 8 frames
  evenly spaced over the whole sticker; stickers with fewer than 8 frames cannot give such a clip and are
  not used (the long-tail short stickers are exactly the data DDU recovers).

Classifier-free-guidance dropout (text / image / both) and "#" token dropout stay on in every variant: they
are what dual guidance at sampling needs, not part of DDU.

``TrainConfig.temporal_layer`` swaps the preset's STI layers for the residual 3x3x3 convolutions of
``model.sti.Conv3DTemporalLayer`` (paper Table 3 "DFGN(3D-Conv)"); everything else of the preset is kept.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PAPER_ROWS", "SWITCHES", "Variant", "parse_variants", "variant_overrides"]


class Variant(StrEnum):
    DFGN_3DCONV = "dfgn_3dconv"
    DFGN_STI = "dfgn_sti"
    STI_DDU = "sti_ddu"
    STI_DDU_LCL = "sti_ddu_lcl"
    STI_DDU_DCL = "sti_ddu_dcl"

    @property
    def label(self) -> str:
        """Short human label for tables and plots."""
        return _LABELS[self]


_LABELS = {
    Variant.DFGN_3DCONV: "DFGN(3D-Conv)",
    Variant.DFGN_STI: "DFGN(STI)",
    Variant.STI_DDU: "+DDU",
    Variant.STI_DDU_LCL: "+DDU+LCL",
    Variant.STI_DDU_DCL: "+DDU+DCL",
}

# TrainConfig fields a variant sets (the only ones allowed to differ between variants of the same seed).
SWITCHES = ("temporal_layer", "dual_mask", "frame_extraction", "curriculum")

_TABLE = {  # variant -> (temporal layer, dual mask, frame extraction, curriculum mode)
    Variant.DFGN_3DCONV: ("conv3d", False, "uniform", "none"),
    Variant.DFGN_STI: ("sti", False, "uniform", "none"),
    Variant.STI_DDU: ("sti", True, "cluster", "none"),
    Variant.STI_DDU_LCL: ("sti", True, "cluster", "linear"),
    Variant.STI_DDU_DCL: ("sti", True, "cluster", "adaptive"),
}

# The paper's numbers for these rows (I&T->V; Table 3 and Table 4; FVD lower is better, VQA higher).
PAPER_ROWS = {
    Variant.DFGN_3DCONV: {"row": "DFGN(3D-Conv)", "fvd": 492.31, "vqa": 0.397},
    Variant.DFGN_STI: {"row": "DFGN", "fvd": 478.47, "vqa": 0.435},
    Variant.STI_DDU: {"row": "DFGN (w/ DDU) = RDTF (w/o CL)", "fvd": 459.21, "vqa": 0.476},
    Variant.STI_DDU_LCL: {"row": "RDTF (w/ LCL)", "fvd": 451.65, "vqa": 0.484},
    Variant.STI_DDU_DCL: {"row": "DFGN (w/ DDU & w/ DCL) = RDTF (w/ DCL)", "fvd": 442.18, "vqa": 0.502},
}


def variant_overrides(variant: Variant | str) -> dict:
    """TrainConfig overrides of one variant: ``{"temporal_layer", "dual_mask", "frame_extraction", "curriculum": {"mode"}}``."""
    temporal, dual, frames, mode = _TABLE[Variant(variant)]
    return {"temporal_layer": temporal, "dual_mask": dual, "frame_extraction": frames, "curriculum": {"mode": mode}}


def parse_variants(names) -> list[Variant]:
    """Variants from their names, in the given order; ValueError naming the allowed ones."""
    out = []
    for n in names:
        try:
            out.append(Variant(n))
        except ValueError:
            raise ValueError(f"unknown ablation variant {n!r}; allowed: {[v.value for v in Variant]}") from None
    return out
