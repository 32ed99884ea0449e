"""The README's main job: a synthetic drop through the whole DAG, via Dagster, with embedded defaults.

Steps: write a synthetic drop (plus one hostile entry per bad-input class, to show quarantine) under
``RDTF_HOME/drops``; start the Dagster daemon on the persistent SQLite instance in ``DAGSTER_HOME`` — the UI's
instance — so ``new_drop_sensor`` ticks as a sensor, adds the partition and requests ``drop_data_job``; then
launch ``train_job`` through the workspace (``pipelines.demo_runs``). Every run appears on the UI's Runs, Jobs and
Overview pages; the console follows each run's steps and the training's live progress; at the end it prints
where everything landed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from data.drops import find_caption_file, join
from data.lake import read_parquet
from data.redact import redact_uri
from pipelines.resources import default_resources, rdtf_home


def _instance() -> DagsterInstance:
    from pipelines.dagster_home import write_home

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(write_home(rdtf_home() / "dagster_home"))
    return DagsterInstance.get()


IN_PROCESS_MAX_CORES = 4  # train_job's steps run in one process on machines this small (see _train_config)


def _train_config(seed: int, train_steps: int, *, eval_videos: int, sample_steps: int, gallery_stickers: int) -> dict:
    run = f"demo-s{seed}"
    return {"ops": {"trained_model": {"config": {"steps": train_steps, "batch_size": 2, "ckpt_every": 50, "run_name": run}},
                    "sample_gallery": {"config": {"run_name": run, "n_stickers": gallery_stickers, "steps": sample_steps}},
                    # CPU demo (default): 6 test stickers, 10 DDIM steps (paper: 500, 25); FAST-VQA with 1 clip of 16 frames
                    # instead of 4 x 32 (all tagged in MLflow: vqa_num_clips, ...)
                    "evaluation_samples": {"config": {"run_name": run, "steps": sample_steps, "n_videos": eval_videos}},
                    "vqa": {"config": {"num_clips": 1, "clip_len": 16}},
                    # the demo's model has random-init towers (weights=random): promoted only because the demo
                    # says so, so that `rdtf generate --model models:/rdtf-dfgn@champion` works
                    "model_promotion": {"config": {"allow_random": True}}},
            # on a small machine (the 2-core CI box) the steps' processes would only take cores from each other, and
            # each would pay its own interpreter start and torch/diffusers imports (~4 s): run the steps in one
            # process there; with more cores, the default multiprocess executor runs gallery and metrics in parallel
            **({"execution": {"config": {"in_process": {}}}} if (os.cpu_count() or 1) <= IN_PROCESS_MAX_CORES else {})}


def _latest(instance: DagsterInstance, asset: str) -> dict:
    ev = instance.get_latest_materialization_event(AssetKey(asset))
    return {k: v.value for k, v in ev.asset_materialization.metadata.items()} if ev and ev.asset_materialization else {}


def run_demo(n: int = 120, seed: int = 0, train_steps: int = 200, *, eval_videos: int = 6, sample_steps: int = 10,
             gallery_stickers: int = 1) -> int:
    from data.synthetic import make_drop
    from data.synthetic_faults import inject_faults

    t0 = time.perf_counter()
    instance = _instance()
    resources = default_resources()
    storage = resources["storage"]
    drop_id = f"demo-s{seed}-n{n}"
    drop_url = join(storage.drops_root, drop_id)
    if find_caption_file(drop_url) is None:
        print(f"[1/4] writing synthetic drop {drop_url} ({n} stickers + hostile entries)")
        make_drop(drop_url, n=n, seed=seed, workers=min(2, os.cpu_count() or 1))
        inject_faults(drop_url, seed=seed)
    else:
        print(f"[1/4] drop {drop_url} already exists (deterministic for the seed), reusing it")

    from pipelines.demo_runs import daemon, follow, launch, wait_for_sensor_run

    print(f"[2/4] starting the Dagster daemon (DAGSTER_HOME={os.environ['DAGSTER_HOME']}): new_drop_sensor ticks")
    log_dir = rdtf_home() / "logs"
    with daemon(log_dir) as proc:
        if drop_id in instance.get_dynamic_partitions("drops"):  # a demo re-run: launch it like the UI's button
            print(f"      partition {drop_id} is already known: launching drop_data_job for it")
            run_id = launch("drop_data_job", {}, {"dagster/partition": drop_id, "rdtf/source": "demo"})
        else:
            run_id = wait_for_sensor_run(instance, "new_drop_sensor", drop_id, daemon=proc)
            if run_id is None:
                print(f"demo: new_drop_sensor requested no run for {drop_id} within 3 minutes; see "
                      f"{log_dir / 'dagster-daemon.log'}", file=sys.stderr)
                return 1
            print(f"      the sensor added partition {drop_id} and requested run {run_id}")
        print(f"[3/4] drop_data_job for partition {drop_id} (run {run_id})")
        status = follow(instance, run_id, daemon=proc)
        if status is not DagsterRunStatus.SUCCESS:
            print(f"demo: drop_data_job ended {status.value}; see the Dagster UI (bash scripts/dev.sh ui)", file=sys.stderr)
            return 1
        if train_steps > 0:
            print(f"[4/4] training DFGN 'tiny_pixel' for {train_steps} steps on CPU via torchrun + Dagster Pipes, then a "
                  "sample gallery, evaluation (FVD, VQA, CLIP similarity, PSNR/SSIM), the run comparison, the "
                  "registered model and the promotion gate (train_job)")
            cfg = _train_config(seed, train_steps, eval_videos=eval_videos, sample_steps=sample_steps,
                                gallery_stickers=gallery_stickers)
            train_id = launch("train_job", cfg, {"rdtf/source": "demo"})
            status = follow(instance, train_id, daemon=proc)
            if status is not DagsterRunStatus.SUCCESS:
                print(f"demo: train_job ended {status.value}; see the Dagster UI", file=sys.stderr)
                return 1
            tmd = _latest(instance, "trained_model")
            gmd = _latest(instance, "sample_gallery")
            emd = {node: _latest(instance, node) for node in ("fvd", "vqa", "clip_similarity", "reconstruction_metrics",
                                                              "model_comparison", "registered_model", "model_promotion")}

    out = storage.lake.ingest(drop_id)
    man, quar = storage.lake.manifest(drop_id), storage.lake.quarantine(drop_id)
    print("\nResults")
    print(f"  ingested stickers : {len(man)} ({int(man.n_frames.sum())} frames) -> {out / 'manifest.parquet'}")
    print(f"  decoded frames    : {out / 'frames'}")
    print(f"  quarantined       : {len(quar)} {quar.reason.value_counts().to_dict()} -> {out / 'quarantine.parquet'}")
    emb = storage.lake.embeddings(drop_id)
    emb_rep = json.loads((emb / "report.json").read_text())
    print(f"  CLIP embeddings   : {emb_rep['n_frames']} frames, dim {emb_rep['embed_dim']}, model {emb_rep['clip']['model']} "
          f"(weights={emb_rep['clip']['weights']}) -> {emb}")
    cl = read_parquet(storage.lake.clusters(drop_id), columns=["split"]).to_pandas()
    print(f"  frame clusters    : k=3..8 per sticker, split {cl.split.value_counts().to_dict()} -> {storage.lake.clusters(drop_id)}")
    index = json.loads((storage.lake.shards(drop_id) / "index.json").read_text())
    print(f"  WebDataset shards : {len(index['shards'])} shards {index['counts']} {index['brace']} -> {storage.lake.shards(drop_id)}")
    if train_steps > 0:
        losses = {k.removeprefix("loss_"): round(v, 3) for k, v in tmd.items() if k.startswith("loss_")}
        print(f"  trained model     : step {tmd['step']}, final loss {tmd.get('final_loss', float('nan')):.3f} {losses} "
              f"(weights={tmd['weights']})")
        print(f"                      checkpoint {tmd['checkpoint']}")
        print(f"  sample gallery    : {gmd['n_gifs']} GIFs (text/image/interpolate/predict, {sample_steps} DDIM steps) "
              f"-> {gmd['gallery_dir']}")
        f, v, c, r = (emd[k] for k in ("fvd", "vqa", "clip_similarity", "reconstruction_metrics"))
        print(f"  evaluation        : {f['n_videos']} test stickers x 4 tasks (metric networks: weights=random)")
        for task in ("t2v", "i2v", "interpolation", "prediction"):
            extra = (f", PSNR {r[f'{task}/psnr']:.2f} dB, SSIM {r[f'{task}/ssim']:.3f}" if f"{task}/psnr" in r else "")
            print(f"      {task:<13} FVD {f[f'{task}/fvd']:8.2f}, VQA {v[f'{task}/vqa']:.3f}, "
                  f"CLIP {c[f'{task}/clip_matched']:.3f} (top-1 {c[f'{task}/clip_top1']:.2f}){extra}")
        print(f"  comparison        : {emd['model_comparison']['n_runs']} run(s) -> {emd['model_comparison']['report']}")
        reg, prom = emd["registered_model"], emd["model_promotion"]
        print(f"  registered model  : {reg['model_uri']} (alias challenger) -> {prom['decision']}: {prom['reason']}")
        if prom.get("champion_model_uri"):
            print(f"                      .venv/bin/rdtf generate --model {prom['champion_model_uri']} --prompt 'a cat' "
                  "--out cat.gif   |   bash scripts/dev.sh serve -m " + prom["champion_model_uri"] + " -p 5001")
        shown = redact_uri(resources["mlflow"].tracking_uri)  # MLFLOW_TRACKING_URI may carry credentials
        print(f"  MLflow run        : {tmd.get('mlflow_run_id')} in {shown} "
              "(eval/* metrics; gallery/, evaluation/ artifacts)")
        print(f"                      (UI: .venv/bin/mlflow ui --backend-store-uri {shown} --host 127.0.0.1)")
    print(f"  Dagster runs      : {run_id}{f' and {train_id}' if train_steps > 0 else ''} in {os.environ['DAGSTER_HOME']} "
          "(UI: bash scripts/dev.sh ui -> Runs, Jobs, Overview)")
    wall = time.perf_counter() - t0
    boot = int(os.environ.get("RDTF_BOOTSTRAP_MS", "0") or 0) / 1000  # set by scripts/dev.sh
    print(f"  wall time         : {wall:.1f} s (environment set-up excluded); {wall + boot:.1f} s with it "
          f"(bootstrap {boot:.1f} s{'' if boot else ', not run through scripts/dev.sh'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=120, help="stickers in the synthetic drop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=200, help="DFGN tiny training steps (0 = skip training)")
    p.add_argument("--eval-videos", type=int, default=6, help="test stickers sampled for evaluation (paper: 500)")
    p.add_argument("--sample-steps", type=int, default=10, help="DDIM steps of the gallery and evaluation samples "
                   "(paper: 25)")
    p.add_argument("--gallery-stickers", type=int, default=1, help="test stickers in the sample gallery (4 GIFs each)")
    p.add_argument("--s3", action="store_true", default=os.environ.get("RDTF_DEMO_S3", "") not in ("", "0"),
                   help="start a loopback S3 API server (moto, 127.0.0.1) and run with RDTF_DROPS_ROOT=s3://rdtf/drops "
                        "and RDTF_LAKE_ROOT=s3://rdtf/lake: drops, every stage, checkpoints and evaluation on the "
                        "object store (also: RDTF_DEMO_S3=1)")
    args = p.parse_args(argv)
    for name in ("n", "eval_videos", "sample_steps", "gallery_stickers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.train_steps < 0 or args.seed < 0:
        p.error("--train-steps and --seed must be >= 0")
    sizes = {"eval_videos": args.eval_videos, "sample_steps": args.sample_steps, "gallery_stickers": args.gallery_stickers}
    if not args.s3:
        return run_demo(n=args.n, seed=args.seed, train_steps=args.train_steps, **sizes)
    from pipelines.s3_server import start_s3_server

    with start_s3_server(bucket="rdtf") as s3, s3.environment(RDTF_LAKE_ROOT=s3.url("lake"),
                                                              RDTF_DROPS_ROOT=s3.url("drops")):
        print(f"[s3] loopback S3 API server {s3.endpoint}: drops {s3.url('drops')}, lake {s3.url('lake')} "
              "(gone when the demo exits; the Dagster and MLflow stores stay local)")
        return run_demo(n=args.n, seed=args.seed, train_steps=args.train_steps, **sizes)


if __name__ == "__main__":
    sys.exit(main())
