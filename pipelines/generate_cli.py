"""``rdtf generate``: a trained RDTF checkpoint -> an animated sticker file, from the command line.

    rdtf generate --checkpoint DIR --prompt "a cat waving" --out cat.gif
    rdtf generate --checkpoint DIR --prompt "..." --image first.png [--position 0] --out x.webp
    rdtf generate --checkpoint DIR --task generate_image --image first.png --out x.gif   # image only, no text
    rdtf generate --checkpoint DIR --task interpolate --frames a.png,b.png [--positions 0,7] --out x.png
    rdtf generate --model models:/rdtf-dfgn@champion --prompt "a cat waving" --out cat.gif   # from the registry

Why its own module: generation pulls in torch and the model, while the other ``rdtf`` commands are
data tools; keeping it here means ``pipelines/cli.py`` only needs ``add_generate_parser`` and stays
light, and ``python -m pipelines.generate_cli generate ...`` works on its own for smoke tests.

Cheap checks (output suffix, known-frame count for the task, readable images, checkpoint folder)
run before the checkpoint is loaded, so a typo fails in milliseconds. Every user error ends as
``rdtf generate: error: <message>`` on stderr with exit code 2 and no traceback, like argparse.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from model.masks import SamplingTask

TASKS = tuple(t.value for t in SamplingTask)
WHITE = (255, 255, 255)  # the training background (decode_sticker composites alpha onto white)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _read_image(path: str) -> np.ndarray:
    """Any Pillow-readable image -> ``(H, W, 4)`` uint8 (first frame of an animation, EXIF-rotated)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return np.asarray(ImageOps.exif_transpose(im).convert("RGBA"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def _check_request(args: argparse.Namespace) -> list[str]:
    """Validate what needs no checkpoint; returns the known-frame image paths in order."""
    from data.export import ALLOWED_SUFFIXES

    if Path(args.out).suffix.lower() not in ALLOWED_SUFFIXES:
        raise ValueError(f"--out must end in one of {', '.join(ALLOWED_SUFFIXES)}, got {args.out}")
    if args.contact_sheet and Path(args.contact_sheet).suffix.lower() != ".png":
        raise ValueError(f"--contact-sheet must be a .png file, got {args.contact_sheet}")
    if args.image and args.frames:
        raise ValueError("give either --image (one conditioning frame) or --frames, not both")
    if args.image and args.task not in ("generate", "generate_image"):
        raise ValueError(f"--image conditions generation (--task generate or generate_image); use --frames for {args.task}")
    if args.task == "generate_image" and args.prompt:
        raise ValueError("--task generate_image is image-only (no text condition): drop --prompt, or use --task generate")
    paths = [args.image] if args.image else [p.strip() for p in (args.frames or "").split(",") if p.strip()]
    n = len(paths)
    # (min, max) known frames; the upper bound (< num_frames) is checked by the pipeline once loaded.
    lo, hi = {"generate": (0, 1), "generate_image": (1, 1), "interpolate": (2, None)}.get(args.task, (1, None))
    if n < lo or (hi is not None and n > hi):
        need = (f"exactly {lo}" if lo == hi else f"{lo} or {hi}") if hi is not None else f"at least {lo}"
        raise ValueError(f"--task {args.task} needs {need} known frames (--frames a.png,b.png), got {n}")
    if args.positions is not None and len(args.positions) != n:
        raise ValueError(f"--positions has {len(args.positions)} entries for {n} known frames")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.duration_ms is not None and args.duration_ms <= 0:
        raise ValueError(f"--duration-ms must be positive, got {args.duration_ms}")
    if args.model is not None:
        _refuse_writing_inputs(args, paths)
        return paths
    args.checkpoint = _local_checkpoint(args.checkpoint)
    if Path(args.checkpoint).is_file():
        raise ValueError(f"checkpoint {args.checkpoint} is a file, not a checkpoint folder "
                         "(give …/checkpoints/step-N or the training run folder)")
    if not Path(args.checkpoint).is_dir():
        raise ValueError(f"checkpoint folder {args.checkpoint} does not exist")
    _refuse_writing_inputs(args, paths)
    return paths


def _local_checkpoint(spec: str) -> str:
    """An object-store checkpoint or run folder (``s3://…/training/<run>``) as a cached local copy; local as given."""
    from data.storage import is_remote, lake_path
    from training.run_mirror import latest_checkpoint, local_checkpoint

    path = lake_path(spec)  # ValueError naming the allowed protocols / the missing extra
    if not is_remote(path):
        return spec
    ckpt = latest_checkpoint(path) or (path if (path / "trainer.json").exists() else None)
    if ckpt is None:
        raise ValueError(f"no checkpoint at {spec} (expected a run folder with checkpoints/latest, or a step-N folder)")
    return str(local_checkpoint(ckpt))


def _refuse_writing_inputs(args: argparse.Namespace, inputs: list[str]) -> None:
    """No output may overwrite an input image or land inside the checkpoint folder (a command never writes its input)."""
    from data.ids import within

    sources = {os.path.realpath(p) for p in inputs}
    for flag, out in (("--out", args.out), ("--contact-sheet", args.contact_sheet)):
        if out is None:
            continue
        if os.path.realpath(out) in sources:
            raise ValueError(f"{flag} {out} is one of the input images: choose another output file")
        if args.checkpoint and within(os.path.realpath(os.path.dirname(os.path.abspath(out))),
                                      os.path.realpath(args.checkpoint)):
            raise ValueError(f"{flag} {out} is inside the checkpoint folder {args.checkpoint}: write it elsewhere")
    if args.contact_sheet and os.path.realpath(args.contact_sheet) == os.path.realpath(args.out):
        raise ValueError("--contact-sheet and --out name the same file")


def _model_package(model_uri: str, tracking_uri: str | None) -> str:
    """A registered model (``models:/<name>@<alias>`` or ``/<version>``) as a local package folder (cached)."""
    from data.storage import scratch_dir
    from pipelines.env import default_tracking_uri
    from training.registry import download_package

    return str(download_package(model_uri, tracking_uri or default_tracking_uri(), scratch_dir()))


def _run(args: argparse.Namespace) -> int:
    paths = _check_request(args)
    raw = [_read_image(p) for p in paths]  # before the (slow) checkpoint load

    from data.export import contact_sheet, save_animation
    from data.media import fit_to_square
    from model.pipeline import RDTFPipeline

    source = _model_package(args.model, args.tracking_uri) if args.model is not None else args.checkpoint
    pipe = RDTFPipeline.from_pretrained(source, device=args.device)
    if args.dtype != "fp32" or args.compile != "none" or args.channels_last:
        from model.performance import PerfConfig

        pipe.optimize(PerfConfig(compile=args.compile, memory_format="channels_last" if args.channels_last else "contiguous"),
                      dtype=args.dtype)
    images = [fit_to_square(im, pipe.image_size, WHITE) for im in raw]  # (S, S, 3) each, aspect kept
    positions = args.positions
    if positions is None and args.image:
        positions = [args.position]
    result = pipe(args.prompt, images=images or None, task=args.task, frame_positions=positions,
                  num_inference_steps=args.steps, text_guidance_scale=args.text_scale,
                  image_guidance_scale=args.image_scale, eta=args.eta, seed=args.seed,
                  paste_known=not args.no_paste_known, progress=not args.quiet)
    durations = [args.duration_ms] * len(result.frames) if args.duration_ms is not None else result.durations_ms
    out = save_animation(result.frames, durations, args.out, transparent_key=WHITE if args.transparent else None)
    shown = f"{durations[0]} ms each" if len(set(durations)) == 1 else f"durations {durations} ms"
    print(f"wrote {out}: {len(result.frames)} frames, {shown}")
    if args.contact_sheet:
        print(f"contact sheet: {contact_sheet(result.frames, args.contact_sheet, label=args.prompt or None)}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, OSError) as exc:  # user errors (CheckpointError included): message only, like argparse (exit 2)
        print(f"rdtf generate: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, always
        return 2


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``generate`` on an ``add_subparsers()`` object; returns the sub-parser."""
    g = subparsers.add_parser("generate", help="sample an animated sticker from a trained checkpoint")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR|URL",
                     help="checkpoint folder (…/checkpoints/step-N), a training run folder (uses its latest) or an "
                          "exported model package (model_index.json); local or an object-store URL "
                          "(s3://bucket/lake/training/<run>, downloaded once to $RDTF_SCRATCH)")
    src.add_argument("--model", metavar="models:/NAME@ALIAS",
                     help="a registered MLflow model: models:/rdtf-dfgn@champion, models:/rdtf-dfgn/3 (its package is "
                          "downloaded once per version to $RDTF_SCRATCH)")
    g.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking/registry URI for --model (default: $MLFLOW_TRACKING_URI, else the project's "
                        "sqlite:///$RDTF_HOME/mlflow.db)")
    g.add_argument("--prompt", default="", help="text prompt (empty = unconditional on text)")
    g.add_argument("--task", choices=TASKS, default="generate",
                   help="generate: text (and optionally --image) -> sticker; generate_image: --image only, no text "
                        "(Table 7's text-free generation); interpolate / predict_forward / predict_backward: --frames "
                        "(default: %(default)s)")
    g.add_argument("--image", metavar="PATH", help="generate / generate_image: this image is the known frame")
    g.add_argument("--position", type=int, default=0, help="frame index of --image (default 0)")
    g.add_argument("--frames", metavar="A.png,B.png", help="known frames for interpolate / predict_*")
    g.add_argument("--positions", type=_int_list, default=None, metavar="0,7",
                   help="frame indices of --frames (default: evenly spaced for interpolate, "
                        "leading for predict_forward, trailing for predict_backward)")
    g.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50, Table 6)")
    g.add_argument("--eta", type=float, default=1.0, help="DDIM eta (default: 1.0, the paper's setting)")
    g.add_argument("--text-scale", type=float, default=7.5, help="text guidance scale (default: 7.5)")
    g.add_argument("--image-scale", type=float, default=7.5, help="image guidance scale (default: 7.5)")
    g.add_argument("--seed", type=int, default=0, help="noise seed: same seed and options, same sticker (default: 0)")
    g.add_argument("--duration-ms", type=int, default=None,
                   help="per-frame duration (default: the checkpoint's typical training duration)")
    g.add_argument("--transparent", action="store_true", help="key the white background out to transparency")
    g.add_argument("--out", required=True, metavar="X.gif|X.webp|X.png", help="output file (.png = APNG)")
    g.add_argument("--contact-sheet", metavar="PNG", default=None, help="also write all frames as one PNG grid")
    g.add_argument("--no-paste-known", action="store_true",
                   help="keep the model's own version of known frames instead of the exact inputs")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    g.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="U-Net and VAE-decoder weights: bf16 is faster on a GPU (default: fp32)")
    g.add_argument("--compile", choices=("none", "regional", "full"), default="none",
                   help="torch.compile the U-Net: regional = each stage (default: none; pays off for many stickers "
                        "or steps, the first call compiles)")
    g.add_argument("--channels-last", action="store_true", help="NHWC activations in the U-Net (default: off)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(fn=_cmd_generate)
    return g


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rdtf", description="RDTF sticker generation")
    add_generate_parser(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
