"""The README's main job: a synthetic drop through the whole DAG, via Dagster, with embedded defaults.

Steps: write a synthetic drop (plus one hostile entry per bad-input class, to show quarantine) under
``RDTF_HOME/drops``; evaluate the new-drop sensor exactly as the daemon would (it adds the dynamic
partition and requests the run); execute the requested run in-process against the persistent
SQLite Dagster instance in ``DAGSTER_HOME``; print where everything landed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from dagster import DagsterInstance, SensorResult, build_sensor_context

from data.drops import find_caption_file, join
from data.lake import read_parquet
from data.redact import redact_uri
from pipelines.resources import default_resources, rdtf_home


def _instance() -> DagsterInstance:
    from pipelines.dagster_home import write_home

    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(write_home(rdtf_home() / "dagster_home"))
    return DagsterInstance.get()


def run_demo(n: int = 120, seed: int = 0, train_steps: int = 200) -> int:
    from data.synthetic import make_drop
    from data.synthetic_faults import inject_faults
    from pipelines.definitions import defs
    from pipelines.sensors import new_drop_sensor

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

    print("[2/4] evaluating the new-drop sensor")
    result = new_drop_sensor(build_sensor_context(instance=instance, resources=resources))
    if isinstance(result, SensorResult):
        for req in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        print(f"      sensor added partitions {[r.partition_key for r in result.run_requests]}")
    else:
        print(f"      sensor: {result.skip_message} (partition already known; re-materializing it)")
        instance.add_dynamic_partitions("drops", [drop_id])

    print(f"[3/4] materializing drop_data_job for partition {drop_id} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    job = defs.resolve_job_def("drop_data_job")
    run = job.execute_in_process(
        partition_key=drop_id,
        instance=instance,
        tags={"rdtf/source": "demo"},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},  # step logs stay in the UI
    )
    for ev in run.get_asset_check_evaluations():
        print(f"      check {ev.asset_key.to_user_string()}:{ev.check_name} passed={ev.passed}")
    if not run.success:
        print("demo: the Dagster run failed; see the Dagster UI (bash scripts/dev.sh ui)", file=sys.stderr)
        return 1

    if train_steps > 0:
        print(f"[4/4] training DFGN 'tiny_pixel' for {train_steps} steps on CPU via torchrun + Dagster Pipes, then a "
              "sample gallery, evaluation (FVD, VQA, CLIP similarity, PSNR/SSIM) and the run comparison (train_job)")
        train = defs.resolve_job_def("train_job").execute_in_process(
            instance=instance,
            tags={"rdtf/source": "demo"},
            run_config={"ops": {"trained_model": {"config": {"steps": train_steps, "batch_size": 2, "ckpt_every": 50,
                                                             "run_name": f"demo-s{seed}"}},
                                "sample_gallery": {"config": {"run_name": f"demo-s{seed}", "n_stickers": 2, "steps": 10}},
                                # CPU demo: 8 test stickers, 10 DDIM steps (paper: 500, 25); FAST-VQA with 1 clip
                                # of 16 frames instead of 4 x 32 (all tagged in MLflow: vqa_num_clips, ...)
                                "evaluation_samples": {"config": {"run_name": f"demo-s{seed}", "steps": 10,
                                                                  "n_videos": 8}},
                                "vqa": {"config": {"num_clips": 1, "clip_len": 16}},
                                # the demo's model has random-init towers (weights=random): promoted only because
                                # the demo says so, so that `rdtf generate --model models:/rdtf-dfgn@champion` works
                                "model_promotion": {"config": {"allow_random": True}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        if not train.success:
            print("demo: training failed; see the Dagster UI", file=sys.stderr)
            return 1
        (mat,) = train.asset_materializations_for_node("trained_model")
        tmd = {k: v.value for k, v in mat.metadata.items()}
        (gmat,) = train.asset_materializations_for_node("sample_gallery")
        gmd = {k: v.value for k, v in gmat.metadata.items()}
        emd = {}
        for node in ("fvd", "vqa", "clip_similarity", "reconstruction_metrics", "model_comparison", "registered_model",
                     "model_promotion"):
            (m,) = train.asset_materializations_for_node(node)
            emd[node] = {k: v.value for k, v in m.metadata.items()}

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
        print(f"  sample gallery    : {gmd['n_gifs']} GIFs (text/image/interpolate/predict, 10 DDIM steps) -> {gmd['gallery_dir']}")
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
    print(f"  Dagster run       : {run.run_id} in {os.environ['DAGSTER_HOME']}  (UI: bash scripts/dev.sh ui)")
    print(f"  wall time         : {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=120, help="stickers in the synthetic drop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=200, help="DFGN tiny training steps (0 = skip training)")
    p.add_argument("--s3", action="store_true", default=os.environ.get("RDTF_DEMO_S3", "") not in ("", "0"),
                   help="start a loopback S3 API server (moto, 127.0.0.1) and run with RDTF_DROPS_ROOT=s3://rdtf/drops "
                        "and RDTF_LAKE_ROOT=s3://rdtf/lake: drops, every stage, checkpoints and evaluation on the "
                        "object store (also: RDTF_DEMO_S3=1)")
    args = p.parse_args(argv)
    if not args.s3:
        return run_demo(n=args.n, seed=args.seed, train_steps=args.train_steps)
    from pipelines.s3_server import start_s3_server

    with start_s3_server(bucket="rdtf") as s3, s3.environment(RDTF_LAKE_ROOT=s3.url("lake"),
                                                              RDTF_DROPS_ROOT=s3.url("drops")):
        print(f"[s3] loopback S3 API server {s3.endpoint}: drops {s3.url('drops')}, lake {s3.url('lake')} "
              "(gone when the demo exits; the Dagster and MLflow stores stay local)")
        return run_demo(n=args.n, seed=args.seed, train_steps=args.train_steps)


if __name__ == "__main__":
    sys.exit(main())
