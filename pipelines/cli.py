"""``rdtf`` command line: synthetic drops, direct ingest, and the end-to-end demo.

    rdtf make-drop OUT [--n 200] [--seed 0] [--faults] [--workers N]
    rdtf ingest DROP_URL --out DIR [--drop-id ID] [--size 256] [--workers 0]
    rdtf build-drop DROP_URL --lake DIR [--size 256]
    rdtf generate --checkpoint DIR --prompt TEXT [--image a.png | --task interpolate --frames a.png,b.png] --out x.gif
    rdtf demo [--n 120] [--seed 0] [--train-steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelines.generate_cli import add_generate_parser
from pipelines.train_cli import add_train_parsers


def _int_at_least(lo: int):
    """argparse type: an integer >= lo, with the bound in the error (``--n -3`` used to "write -3 stickers")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value
    parse.__name__ = f"integer >= {lo}"
    return parse


def _drop_id_from_url(url: str) -> str:
    """The drop id a drop URL implies (its last path segment), validated."""
    from data.ids import validate_id

    return validate_id(url.rstrip("/").rsplit("/", 1)[-1], "drop id (the drop folder's name; or pass --drop-id)")


def _cmd_make_drop(args: argparse.Namespace) -> int:
    from data.synthetic import SyntheticConfig, make_drop
    from data.synthetic_faults import inject_faults

    summary = make_drop(args.out, n=args.n, seed=args.seed, cfg=SyntheticConfig(n=args.n, seed=args.seed),
                        workers=args.workers, progress=not args.quiet)
    print(f"wrote {summary.n} stickers to {summary.path}: {json.dumps(summary.counts)}")
    if args.faults:
        faults = inject_faults(args.out, seed=args.seed)
        print(f"injected hostile entries: {json.dumps({k: len(v) for k, v in faults.items()})}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from data.drops import CaptionPolicy
    from data.ingest import IngestSettings, ingest_drop

    settings = IngestSettings(size=args.size, workers=args.workers, caption_policy=CaptionPolicy(args.caption_policy))
    drop_id = _drop_id_from_url(args.drop_url) if args.drop_id is None else args.drop_id
    report = ingest_drop(args.drop_url, Path(args.out), settings, drop_id=drop_id, progress=not args.quiet)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _cmd_build_drop(args: argparse.Namespace) -> int:
    from data.embed import EmbedSettings
    from data.ids import validate_id
    from data.ingest import IngestSettings
    from data.stages import run_data_stages
    from model.clip import ClipSpec, validate_spec

    drop_id = _drop_id_from_url(args.drop_url) if args.drop_id is None else validate_id(args.drop_id, "--drop-id")
    spec = ClipSpec(model=args.clip_model, pretrained=args.clip_pretrained, cache_dir=args.clip_cache)
    validate_spec(spec)  # a missing weights file fails here, naming it — never a silent random tower
    index = run_data_stages(args.drop_url, Path(args.lake), drop_id,
                            ingest=IngestSettings(size=args.size, caption_source=args.captions),
                            embed=EmbedSettings(clip=spec), progress=not args.quiet)
    print(f"shards ready: {index}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(n=args.n, seed=args.seed, train_steps=args.train_steps)


_EPILOG = """examples:
  rdtf demo                                   # synthetic drop -> shards -> training -> GIFs -> metrics (Dagster)
  rdtf make-drop var/drops/my-drop --n 50     # a synthetic drop to play with
  rdtf build-drop var/drops/my-drop --lake var/lake   # data stages without Dagster
  rdtf train --run-name nightly --steps 200    # torchrun on every drop's train shards (any TrainConfig field)
  rdtf evaluate --run-name nightly --n-videos 50   # FVD / VQA / CLIP / PSNR into the run's MLflow run
  rdtf generate --checkpoint var/lake/training/demo-s0 --prompt "a cat waving" --out cat.gif
  rdtf <command> --help                       # every option of a command

Dagster jobs (UI or `dagster job execute -w workspace.yaml -j NAME`): drop_data_job (per drop), train_job
(train + gallery + evaluation + comparison), evaluate_job, ablation_job (partitioned: variant x seed) and
ablation_report_job. Ablation without Dagster: python -m benchmarks.ablation [--quick].
Environment variables: see README ("Dagster").
"""


def build_parser() -> argparse.ArgumentParser:
    from data.captionless import CaptionSource
    from pipelines.env import clip_from_env

    p = argparse.ArgumentParser(
        prog="rdtf", description="RDTF-Stickers pipeline tools (the Dagster UI runs the same stages: bash scripts/dev.sh ui)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("make-drop", help="write a synthetic sticker drop (media + captions.jsonl)")
    m.add_argument("out", help="drop folder or fsspec URL, e.g. var/drops/drop-0001")
    m.add_argument("--n", type=_int_at_least(1), default=200, help="number of stickers (default: 200)")
    m.add_argument("--seed", type=int, default=0, help="generator seed (same seed -> same bytes)")
    m.add_argument("--faults", action="store_true", help="also add one hostile entry per bad-input class")
    m.add_argument("--workers", type=_int_at_least(1), default=1, help="encoder processes (default: 1)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(fn=_cmd_make_drop)

    i = sub.add_parser("ingest", help="decode a drop into the lake without Dagster (debugging, benchmarks)")
    i.add_argument("drop_url", help="drop folder or fsspec URL (media files + caption table)")
    i.add_argument("--out", required=True, help="partition folder, outside the drop (its CURRENT names the version "
                   "holding manifest, quarantine, frames)")
    i.add_argument("--drop-id", default=None, help="default: the drop folder's name")
    i.add_argument("--size", type=_int_at_least(16), default=256, help="stored frame size in px (default: 256)")
    i.add_argument("--workers", type=_int_at_least(0), default=0, help="decode processes, 0 = all cores (default: 0)")
    i.add_argument("--caption-policy", choices=["keep_empty", "quarantine"], default="keep_empty",
                   help="stickers without a caption: keep them with an empty caption, or quarantine them "
                        "(default: %(default)s)")
    i.add_argument("--quiet", action="store_true", help="no progress bar")
    i.set_defaults(fn=_cmd_ingest)

    b = sub.add_parser("build-drop", help="ingest -> embeddings -> clusters -> shards without Dagster")
    b.add_argument("drop_url", help="drop folder or fsspec URL (media files + caption table)")
    b.add_argument("--lake", required=True, help="lake root (outputs under ingest/, embeddings/, clusters/, shards/)")
    b.add_argument("--drop-id", default=None, help="default: the drop folder's name")
    b.add_argument("--size", type=_int_at_least(16), default=256, help="stored frame size in px (default: 256)")
    b.add_argument("--captions", choices=[c.value for c in CaptionSource], default="table",
                   help="table: the drop's caption table; none: a plain folder of stickers, empty captions; filename: "
                        "captions from the file names (data/captionless.py) (default: %(default)s)")
    clip = clip_from_env()
    b.add_argument("--clip-model", default=clip["model"],
                   help="open_clip model of the frame embeddings (default: $RDTF_CLIP_MODEL or %(default)s)")
    b.add_argument("--clip-pretrained", default=clip["pretrained"],
                   help="local CLIP weights file or a tag cached in --clip-cache (default: $RDTF_CLIP_PRETRAINED; "
                        "unset = random init, tagged weights=random)")
    b.add_argument("--clip-cache", default=clip["cache_dir"],
                   help="cache folder holding tagged weights (default: $RDTF_CLIP_CACHE)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(fn=_cmd_build_drop)

    add_train_parsers(sub)  # rdtf train [--config FILE] [--<field> VALUE ...]; rdtf evaluate --run-name NAME
    add_generate_parser(sub)  # rdtf generate --checkpoint ... --prompt ... --out x.gif

    d = sub.add_parser("demo", help="make a synthetic drop and materialize every asset through Dagster")
    d.add_argument("--n", type=_int_at_least(1), default=120, help="synthetic stickers (default: 120)")
    d.add_argument("--seed", type=int, default=0, help="synthetic-drop and training seed (default: 0)")
    d.add_argument("--train-steps", type=_int_at_least(0), default=200, help="DFGN tiny training steps (0 = skip)")
    d.set_defaults(fn=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, TimeoutError) as exc:  # bad input or a busy partition: one line, exit 2
        print(f"rdtf {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
