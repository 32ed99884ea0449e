"""configs/paper.yaml is Table 6 (arXiv 2503.17735, Appendix): every value checked, and the dry run prints the plan."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from training.config import TrainConfig, resolve_grad_accum

PAPER_YAML = ROOT / "configs" / "paper.yaml"
PAPER_TEXT = ROOT.parent / "shared" / "paper" / "rdtf-paper.txt"

# Table 6, transcribed (row name -> value as printed)
TABLE6 = {
    "f": "8", "Latent shape": "32 × 32 × 4", "Input channels": "8", "Output channels": "4", "Layers per block": "2",
    "Head channels": "64", "Embedding dimension": "1024", "Text sequence length": "77",
    "Convolution kernel size": "3,1,1", "Convolution layers": "2", "Num attention layers": "1",
    "Num attention heads": "8", "Attention head dim": "32", "range of k": "3-8", "Kp": "5.0", "Ki": "3.0", "Kd": "1.3",
    "Parameterization": "ϵ", "# train steps": "50K", "Learning rate": "1e-5", "Batch size per GPU": "1", "# GPUs": "16",
    "Diffusion steps": "1000", "Noise schedule": "Linear", "β0": "0.00085", "βT": "0.0120", "Sampler": "DDIM",
    "Steps": "50", "η": "1.0", "Text guidance scale": "7.5", "Img guidance scale": "7.5",
}


@pytest.fixture(scope="module")
def paper_cfg() -> TrainConfig:
    return TrainConfig.from_json(PAPER_YAML)


def test_the_transcription_matches_the_paper_text_when_it_is_here():
    if not PAPER_TEXT.is_file():
        pytest.skip("the paper text (../shared/paper) is not beside this checkout")
    text = PAPER_TEXT.read_text()
    table = text[text.index("Hyperparameter RDTF"): text.index("Table 6: Hyperparameters")]
    lines = table.splitlines()
    for row, value in TABLE6.items():  # the text has LaTeX residue ("f𝑓fitalic_f 8"): match the row start and values
        key = {"Kp": "\\mathcal{K}_{p}", "Ki": "\\mathcal{K}_{i}", "Kd": "\\mathcal{K}_{d}"}.get(row)
        line = next((ln for ln in lines if (key in ln if key else ln.startswith(row))), None)
        assert line is not None, row
        for token in re.findall(r"[0-9][0-9.,\-e]*|[A-Za-zϵ]+$", value):
            assert token in line, (row, value, line)


def test_training_values_of_table6(paper_cfg):
    c = paper_cfg
    assert c.preset == "paper" and c.temporal_layer is None
    assert c.steps == 50_000 and c.lr == 1e-5 and c.batch_size == 1 and c.global_batch == 16  # 1 per GPU x 16 GPUs
    assert resolve_grad_accum(c, 16) == 1 and resolve_grad_accum(c, 8) == 2 and resolve_grad_accum(c, 1) == 16
    assert c.curriculum == {"mode": "adaptive", "kp": 5.0, "ki": 3.0, "kd": 1.3}
    assert c.diffusion == {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                           "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}  # LDM "linear"
    assert c.dual_mask and c.frame_extraction == "cluster" and c.loss_mask == "first_k"
    assert c.warmup_steps == 0 and c.ema_decay == 0.0  # the paper mentions neither
    assert "/" in c.autoencoder and c.text_clip_pretrained and c.text_t5_path  # SD-VAE, CLIP + T5 from local paths


def test_architecture_values_of_table6_come_from_the_paper_preset(paper_cfg):
    from data.loader import DataConfig
    from model.diffusion import DiffusionConfig
    from model.text_encoder import TextEncoderConfig
    from model.unet import preset
    from training.curriculum import CurriculumConfig

    m = preset(paper_cfg.preset)
    assert (m.sample_size, m.out_channels, m.in_channels) == (32, 4, 8)  # latent 32x32x4; 4 noisy + 4 condition
    assert (m.layers_per_block, m.attention_head_dim, m.cross_attention_dim) == (2, 64, 1024)
    assert (m.sti_kernel, m.sti_conv_layers, m.sti_attention_layers, m.sti_heads, m.sti_head_dim) == (3, 2, 1, 8, 32)
    assert m.num_frames == 8
    assert (DataConfig(index_paths=("x",)).k_min, DataConfig(index_paths=("x",)).k_max) == (3, 8)  # range of k
    cur = CurriculumConfig()
    assert (cur.kp, cur.ki, cur.kd, cur.total_steps) == (5.0, 3.0, 1.3, 50_000)
    d = DiffusionConfig()
    assert (d.num_train_timesteps, d.beta_start, d.beta_end, d.prediction_type) == (1000, 0.00085, 0.012, "epsilon")
    seq = {f.name: f.default for f in TextEncoderConfig.__dataclass_fields__.values()}.get("seq_len")
    assert seq in (None, 77)


def test_sampling_values_of_table6_are_the_sampler_defaults():
    from model.pipeline import RDTFPipeline

    d = {k: p.default for k, p in inspect.signature(RDTFPipeline.__call__).parameters.items()}
    assert (d["num_inference_steps"], d["eta"], d["text_guidance_scale"], d["image_guidance_scale"]) == (50, 1.0, 7.5, 7.5)


def _dry_run(args: list[str], capsys) -> tuple[int, str, str]:
    """``python -m training ... --dry-run`` in this process (its argv handling and exit codes, no torch re-import)."""
    from training.trainer import main

    capsys.readouterr()
    rc = main(args + ["--dry-run"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_validates_and_prints_the_plan(capsys):
    rc, out, err = _dry_run(["--config", str(PAPER_YAML), "--world-size", "8"], capsys)
    assert rc == 0, err
    assert "preset paper: DFGN 0.9" in out and "B parameters" in out
    assert "16 clips = batch 1 x grad_accum 2 x 8 rank(s)" in out and "800,000 clips" in out
    assert "16 -> 1" in out and "1 -> 16" in out
    assert "loss mask first_k" in out and "Kp 5.0 Ki 3.0 Kd 1.3" in out and "NOT FOUND" in out
    assert not Path("/lake/training/rdtf-paper").exists()  # nothing written


@pytest.mark.parametrize("entry", ["training", "model.train"])  # model.train: the alias older manifests use
def test_dry_run_through_the_module_entry_point(entry):
    p = subprocess.run([sys.executable, "-m", entry, "--config", str(PAPER_YAML), "--dry-run"], cwd=ROOT,
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert p.returncode == 0 and "grad_accum 16 x 1 rank(s)" in p.stdout, p.stderr[-3000:]


def test_dry_run_refuses_a_bad_config_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(PAPER_YAML.read_text().replace("steps: 50000", "steps: 0"))
    rc, _out, err = _dry_run(["--config", str(bad)], capsys)
    assert rc == 2 and "TrainConfig.steps must be an int >= 1" in err and "Traceback" not in err
    rc, _out, err = _dry_run(["--config", str(PAPER_YAML), "--world-size", "3"], capsys)
    assert rc == 2 and "world sizes that fit: [1, 2, 4, 8, 16]" in err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="one mapping"):
        TrainConfig.from_json(tmp_path / "list.yaml")
    (tmp_path / "obj.yaml").write_text("!!python/object:os.system {}\n")
    with pytest.raises(ValueError, match="not valid YAML"):  # safe loader: no objects
        TrainConfig.from_json(tmp_path / "obj.yaml")


def test_global_batch_rules():
    base = {"index_paths": ["/i.json"], "out_dir": "/o"}
    with pytest.raises(ValueError, match="multiple of batch_size"):
        TrainConfig.from_dict(base | {"global_batch": 6, "batch_size": 4})
    with pytest.raises(ValueError, match="must stay 1 when global_batch"):
        TrainConfig.from_dict(base | {"global_batch": 8, "grad_accum": 2})
    c = TrainConfig.from_dict(base | {"global_batch": 8, "batch_size": 2})
    assert [resolve_grad_accum(c, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ValueError, match="world sizes that fit: \\[1, 2, 4\\]"):
        resolve_grad_accum(c, 3)
    assert resolve_grad_accum(TrainConfig.from_dict(base | {"grad_accum": 3}), 5) == 3
