"""Stage 6: ``registered_model`` and ``model_promotion`` — from an evaluated run to the MLflow ``champion``.

Thin Dagster wrappers over :mod:`training.registry` (MLflow model + registry) and :mod:`evaluation.promotion`
(the pure gate):

- ``registered_model`` (after the metric assets): exports the evaluated checkpoint as a diffusers package
  (``lake/models/<run>/step-N``), logs it as an MLflow ``pyfunc`` model on the training's run, registers a new
  version of ``rdtf-dfgn`` tagged with the evaluation metrics and lineage, and points ``challenger`` at it.
- ``model_promotion`` (after ``model_comparison``): moves ``champion`` to the candidate only when the gate says
  so, and records the decision and its reason as metadata and as tags on the candidate version. Its asset check
  verifies that the aliases agree with the recorded decision.
"""


from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.evaluation import METRIC_ASSETS, SAMPLES_ASSET, latest_metadata
from assets.resources import LakeResource, MlflowResource

REGISTER_ASSET, PROMOTION_ASSET = "registered_model", "model_promotion"
PROMOTION_CHECK = "aliases_match_decision"
EAGER = AutomationCondition.eager()


class RegistrationConfig(Config):
    registered_model: str = Field("rdtf-dfgn", description="MLflow registered-model name.")


def _url(value: str | None):
    return MetadataValue.url(value) if value else ""


@asset(name=REGISTER_ASSET, deps=list(METRIC_ASSETS), group_name="registry", kinds={"mlflow", "pytorch"},
       automation_condition=EAGER,
       description="The evaluated checkpoint as a diffusers package, logged as an MLflow pyfunc model and registered "
                   "(alias challenger) with its metrics and lineage.")
def registered_model(context: AssetExecutionContext, config: RegistrationConfig, storage: LakeResource,
                     mlflow: MlflowResource) -> MaterializeResult:
    import json

    from data.ids import validate_id
    from data.storage import local_output
    from model.checkpoints import step_of
    from model.pipeline import export_checkpoint
    from training import registry as reg
    from training.run_mirror import local_checkpoint

    validate_id(config.registered_model, "registered model name")
    samples = latest_metadata(context, SAMPLES_ASSET)
    run_name, run_id, ckpt = samples.get("run_name"), samples.get("mlflow_run_id"), samples.get("checkpoint")
    if not run_name or not ckpt:
        raise ValueError(f"no {SAMPLES_ASSET} materialization found: evaluate a trained model first")
    if not run_id:
        raise ValueError(f"training run {run_name!r} has no MLflow run id: nothing to attach the model to")
    client = reg.client(mlflow.tracking_uri)
    run = client.get_run(run_id)
    step = step_of(ckpt)
    protocol = reg.protocol_fingerprint(run.data.tags, samples)
    existing = reg.find_version(mlflow.tracking_uri, config.registered_model, run_id, step, protocol)
    if existing is not None:
        version, reused = existing, True
        context.log.info(f"version {existing.version} is already registered for run {run_id} step {step}: reused")
    else:
        out = storage.lake.model_package(run_name, step)
        with local_output(out) as work:
            export_checkpoint(local_checkpoint(ckpt), work)
            model_uri = reg.log_sticker_model(mlflow.tracking_uri, run_id, work)
        train_json = storage.lake.training(run_name) / "train.json"
        indexes = json.loads(train_json.read_text()).get("index_paths", []) if train_json.exists() else []
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
        tags = {**{k: repr(float(v)) for k, v in metrics.items()}, **reg.shard_lineage(indexes),
                "weights": run.data.tags.get("weights", samples.get("weights", "unknown")),
                "dagster_run_id": context.run_id, "git_commit": reg.git_commit(), "training_run": run_name,
                "checkpoint_step": str(step), "eval_protocol": protocol, "package": str(out)}
        version, reused = reg.register_version(mlflow.tracking_uri, config.registered_model, model_uri, run_id, tags), False
    reg.set_alias(mlflow.tracking_uri, config.registered_model, reg.CHALLENGER, version.version)
    return MaterializeResult(metadata={
        "registered_model": config.registered_model, "version": int(version.version), "reused": reused,
        "model_uri": f"models:/{config.registered_model}/{version.version}", "weights": version.tags.get("weights", ""),
        "eval_protocol": protocol, "drops": version.tags.get("drops", ""), "mlflow_run_id": run_id,
        "mlflow_run": _url(reg.run_url(run.info.experiment_id, run_id)),
        "mlflow_model_version": _url(reg.version_url(config.registered_model, version.version)),
    })


class PromotionConfig(Config):
    fvd_margin: float = Field(0.02, description="Relative FVD improvement over the champion required (0.02 = 2 %).")
    clip_tolerance: float = Field(0.0, description="How much lower CLIP similarity (matched) may be and still pass.")
    tasks: list[str] = Field(["t2v", "i2v", "interpolation", "prediction"], description="Gated evaluation tasks.")
    aggregate: str = Field("mean", description="mean (the rule holds for the mean over tasks) | every (for each task).")
    allow_random: bool = Field(False, description="Promote weights=random candidates (demos and tests only).")


@asset(name=PROMOTION_ASSET, deps=[REGISTER_ASSET, "model_comparison"], group_name="registry", kinds={"mlflow"},
       automation_condition=EAGER,
       check_specs=[AssetCheckSpec(PROMOTION_CHECK, asset=PROMOTION_ASSET,
                                   description="champion/challenger aliases agree with the recorded decision")],
       description="The promotion gate: alias champion moves to the candidate only if it beats the champion "
                   "(FVD lower by a margin, CLIP similarity not worse, same evaluation protocol).")
def model_promotion(context: AssetExecutionContext, config: PromotionConfig, mlflow: MlflowResource):
    from evaluation.promotion import Aggregate, ModelScores, PromotionRule, decide
    from training import registry as reg

    rule = PromotionRule(fvd_margin=config.fvd_margin, clip_tolerance=config.clip_tolerance, tasks=tuple(config.tasks),
                         aggregate=Aggregate(config.aggregate), allow_random=config.allow_random)
    reg_md = latest_metadata(context, REGISTER_ASSET)
    name, cand_v = reg_md.get("registered_model"), reg_md.get("version")
    if not name or cand_v is None:
        raise ValueError(f"no {REGISTER_ASSET} materialization found: register a model first")
    client = reg.client(mlflow.tracking_uri)
    cand = client.get_model_version(name, str(cand_v))
    champ = reg.alias_version(mlflow.tracking_uri, name, reg.CHAMPION)

    def scores(v) -> ModelScores:
        return ModelScores(str(v.version), reg.version_metrics(v), v.tags.get("weights", "unknown"),
                           v.tags.get("eval_protocol", ""))

    decision = decide(scores(cand), scores(champ) if champ is not None else None, rule)
    previous = champ.version if champ is not None else None
    if decision.promote:
        reg.set_alias(mlflow.tracking_uri, name, reg.CHAMPION, cand.version)
    reg.set_version_tags(mlflow.tracking_uri, name, cand.version, {
        "promotion.decision": "promoted" if decision.promote else "refused", "promotion.reason": decision.reason,
        "promotion.champion_before": previous or "none", "promotion.dagster_run_id": context.run_id})
    (context.log.info if decision.promote else context.log.warning)(f"v{cand.version}: {decision.reason}")
    champion_now = reg.alias_version(mlflow.tracking_uri, name, reg.CHAMPION)
    challenger = reg.alias_version(mlflow.tracking_uri, name, reg.CHALLENGER)
    expected = cand.version if decision.promote else previous
    ok = (champion_now.version if champion_now else None) == expected and challenger is not None \
        and challenger.version == cand.version
    yield MaterializeResult(
        metadata={"decision": "promoted" if decision.promote else "refused", "reason": decision.reason,
                  "candidate_version": int(cand.version), "champion_version": int(champion_now.version) if champion_now else -1,
                  "previous_champion": int(previous) if previous else -1, "compared": MetadataValue.json(decision.compared),
                  "rule": MetadataValue.json(rule.__dict__ | {"tasks": list(rule.tasks)}),
                  "mlflow_model_version": _url(reg.version_url(name, cand.version)),
                  "champion_model_uri": f"models:/{name}@{reg.CHAMPION}" if champion_now else ""},
        tags={"promotion/decision": "promoted" if decision.promote else "refused"},
        check_results=[AssetCheckResult(
            check_name=PROMOTION_CHECK, passed=ok, severity=AssetCheckSeverity.ERROR,
            metadata={"champion": champion_now.version if champion_now else "none",
                      "challenger": challenger.version if challenger else "none", "expected_champion": expected or "none"})],
    )


REGISTRY_ASSETS = [registered_model, model_promotion]
