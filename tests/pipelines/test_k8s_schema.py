"""Every Kubernetes object the project produces, checked against the Kubernetes API's own OpenAPI schemas.

``kubernetes-validate`` ships the JSON schemas of each Kubernetes release; ``strict=True`` rejects unknown
fields, so a misspelled key (which the API server would drop silently, or refuse) fails here instead of on a
cluster. Checked for every version in ``pipelines.k8s.SUPPORTED_K8S_VERSIONS``:

- the builders of ``pipelines/k8s.py``: the rendezvous Service, the worker Indexed Job, the head Pod (its spec
  wrapped as a Pod, and the Pod that dagster-k8s's own ``build_pod_body`` makes of it), for an object-store
  lake, an NFS lake, a GCS lake, single- and multi-node;
- the Jobs dagster-k8s builds from ``deploy/k8s/dagster.yaml`` (run worker) and ``executor.yaml`` (every step);
- every YAML under ``deploy/k8s/`` that is a Kubernetes object; the rest (Dagster instance, executor config, Helm
  values) must be on a known list, so a new manifest cannot slip by unchecked. The Helm values' pod fragments
  are validated inside a Pod (the chart itself is not rendered: no helm here).

A deliberately broken manifest must fail, so the check is known to bite.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate as kv
import pytest
import yaml
from kubernetes_validate.utils import VersionNotSupportedError, all_versions, major_minor

from pipelines import k8s
from pipelines.k8s import SUPPORTED_K8S_VERSIONS
from tests.helpers import ROOT, write_kubeconfig

DEPLOY = ROOT / "deploy" / "k8s"
IMAGE = "registry.example.com/rdtf-stickers:1.0"
NOT_K8S_OBJECTS = {"dagster.yaml", "executor.yaml", "values.yaml"}  # Dagster / Helm configuration files
LAKES = {"s3": "s3://rdtf-lake/lake", "gcs": "gs://rdtf-lake/lake", "nfs": "/lake", "nfs-url": "file:///mnt/nfs/lake"}


def validate(obj: dict[str, Any], version: str) -> None:
    """Strict validation against exactly ``version``'s schemas (the validator would fall back to an older
    schema set for a version it lacks; that would hide an unsupported version, so it is refused)."""
    used = kv.validate(obj, version, strict=True)
    assert used == version, f"validated against {used}, not {version}"


def _pod(spec: dict[str, Any], name: str = "rdtf-head") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "rdtf"}, "spec": spec}


def _serialize(model: Any) -> dict[str, Any]:
    """A kubernetes-client model as the API server receives it (camelCase, no None fields)."""
    import kubernetes

    return kubernetes.client.ApiClient().sanitize_for_serialization(model)


def test_supported_versions_are_shipped_by_the_validator():
    shipped = {major_minor(v) for v in all_versions()}
    assert set(SUPPORTED_K8S_VERSIONS) <= shipped, f"kubernetes-validate ships {sorted(shipped)}"
    assert len(SUPPORTED_K8S_VERSIONS) == 3 and list(SUPPORTED_K8S_VERSIONS) == sorted(SUPPORTED_K8S_VERSIONS)


# ---------------------------------------------------------------------------------------------- builders


def _launches() -> dict[str, k8s.TrainingLaunch]:
    out = {}
    for name, lake in LAKES.items():
        res = k8s.PodResources(lake_root=lake)
        out[f"{name}-3x8"] = k8s.training_launch(IMAGE, 3, 8, f"{lake}/training/r/train.json", group="rdtf-r-1234",
                                                 namespace="rdtf", resources=res)
    out["single-cpu-models"] = k8s.training_launch(
        IMAGE, 1, 1, "/lake/c.json", group="rdtf-one", namespace="rdtf",
        resources=k8s.PodResources(models_pvc="weights", service_account="trainer", node_selector={"pool": "gpu"},
                                   scratch_size=None))
    out["s3-workload-identity"] = k8s.training_launch(
        IMAGE, 2, 4, "s3://b/l/c.json", group="rdtf-wi", namespace="rdtf",
        resources=k8s.PodResources(lake_root="s3://b/l", object_store_secret=None, env_secrets=()))
    return out


LAUNCHES = _launches()


@pytest.mark.parametrize("version", SUPPORTED_K8S_VERSIONS)
@pytest.mark.parametrize("case", sorted(LAUNCHES))
def test_training_objects_pass_the_kubernetes_schema(case, version):
    launch = LAUNCHES[case]
    validate(_pod(launch.base_pod_spec), version)
    if launch.nnodes > 1:
        assert launch.service is not None and launch.worker_job is not None
        validate(launch.service, version)
        validate(launch.worker_job, version)
    else:
        assert launch.service is None and launch.worker_job is None


@pytest.mark.parametrize("version", SUPPORTED_K8S_VERSIONS)
def test_head_pod_as_dagster_k8s_builds_it_passes_the_kubernetes_schema(version):
    """What PipesK8sClient.run really sends: dagster-k8s's pod body from the launch's base_pod_spec + env."""
    from dagster_k8s.pipes import build_pod_body

    for launch in LAUNCHES.values():
        kw = launch.pipes_run_kwargs()
        pod = build_pod_body(pod_name="dagster-0123abcd-trained-model-1", image=kw["image"], command=kw["command"],
                             env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg", **kw["env"]},
                             base_pod_meta=kw["base_pod_meta"], base_pod_spec=kw["base_pod_spec"])
        validate({"apiVersion": "v1", "kind": "Pod", **_serialize(pod)}, version)


@pytest.mark.parametrize("version", SUPPORTED_K8S_VERSIONS)
@pytest.mark.parametrize("lake", [k8s.EXAMPLE_LAKE, "/lake"])
def test_render_example_passes_the_kubernetes_schema(lake, version):
    docs = k8s.render_example(lake_root=lake)
    assert [d["kind"] for d in docs] == ["Service", "Job", "Pod"]
    for doc in docs:
        validate(doc, version)


# ---------------------------------------------------------------------------------------------- deploy/k8s


def _deploy_documents() -> list[tuple[str, int, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.y*ml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((path.name, i, doc))
    return docs


def _is_k8s_object(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str)


def test_every_deploy_yaml_is_a_kubernetes_object_or_a_known_config_file():
    docs = _deploy_documents()
    skipped = {name for name, _, doc in docs if not _is_k8s_object(doc)}
    assert skipped == NOT_K8S_OBJECTS, "a new YAML under deploy/k8s is neither a k8s object nor a known config file"
    checked = {name for name, _, doc in docs if _is_k8s_object(doc)}
    assert checked >= set(k8s.EXAMPLES) and not checked & NOT_K8S_OBJECTS


@pytest.mark.parametrize("version", SUPPORTED_K8S_VERSIONS)
def test_deploy_manifests_pass_the_kubernetes_schema(version):
    n = 0
    for name, i, doc in _deploy_documents():
        if _is_k8s_object(doc):
            try:
                validate(doc, version)
            except kv.ValidationError as exc:
                raise AssertionError(f"deploy/k8s/{name} document {i}: {exc.message} at {list(exc.absolute_path)}") from exc
            n += 1
    assert n >= 6  # two example files x (Service, Job, Pod)


# ---------------------------------------------------------------------------------------------- dagster-k8s Jobs


@pytest.fixture
def run_launcher(monkeypatch, tmp_path):
    """The K8sRunLauncher of deploy/k8s/dagster.yaml (a kubeconfig file instead of the in-cluster account)."""
    from dagster import Shape
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    monkeypatch.setenv("RDTF_K8S_NAMESPACE", "rdtf")
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig)
    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_launcher"]["config"]
    res = process_config(Shape(K8sRunLauncher.config_type()), raw)
    assert res.success, res.errors
    return K8sRunLauncher(**{**res.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})


def _dagster_job(launcher, context, component: str) -> dict[str, Any]:
    from dagster_k8s.job import construct_dagster_k8s_job

    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, launcher), args=["dagster", "api", "execute_run", "{}"],
        job_name=f"dagster-{component}-0123abcd", pod_name=f"dagster-{component}-0123abcd", component=component,
        user_defined_k8s_config=context.run_k8s_config, labels={"dagster/job": "drop_data_job"},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": "drop_data_job"}])
    return _serialize(job)


@pytest.mark.parametrize("version", SUPPORTED_K8S_VERSIONS)
def test_run_and_step_jobs_dagster_k8s_builds_from_the_deploy_files_pass_the_schema(run_launcher, version):
    """The same merge as ``K8sRunLauncher`` (run pods) and ``k8s_job_executor`` (one pod per step)."""
    from dagster import DagsterRun
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    run = DagsterRun(job_name="drop_data_job", run_id="0123abcd-0000-4000-8000-000000000000")
    run_ctx = K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=True)
    run_job = _dagster_job(run_launcher, run_ctx, "run_worker")
    validate(run_job, version)
    envfrom = run_job["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "rdtf-object-store"}} in envfrom  # the object-store lake's credentials

    exc = yaml.safe_load((DEPLOY / "executor.yaml").read_text())
    step_ctx = K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=False).merge(
        K8sContainerContext(volumes=exc.get("volumes"), volume_mounts=exc.get("volume_mounts"),
                            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(exc.get("step_k8s_config", {}))))
    for op in [None, *exc["per_step_k8s_config"]]:
        ctx = step_ctx if op is None else step_ctx.merge(K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(exc["per_step_k8s_config"][op])))
        validate(_dagster_job(run_launcher, ctx, "step_worker"), version)


@pytest.mark.parametrize("version", SUPPORTED_K8S_VERSIONS)
def test_helm_values_pod_fragments_pass_the_schema(version):
    """The code server's env, secrets, volumes and resources, and the run launcher's, placed in a Pod."""
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    (dep,) = values["dagster-user-deployments"]["deployments"]
    rl = values["runLauncher"]["config"]["k8sRunLauncher"]
    for frag in (dep, rl):
        container = {"name": "dagster", "image": IMAGE, "env": frag.get("env") or frag.get("envVars") or [],
                     "envFrom": [{"configMapRef": {"name": c["name"]}} for c in frag.get("envConfigMaps", [])]
                     + [{"secretRef": {"name": s["name"]}} for s in frag.get("envSecrets", [])],
                     "volumeMounts": frag.get("volumeMounts", []), "resources": frag.get("resources", {})}
        validate(_pod({"containers": [container], "volumes": frag.get("volumes", [])}), version)


# ---------------------------------------------------------------------------------------------- the check bites


def _head_pod() -> dict[str, Any]:
    return copy.deepcopy(k8s.render_example()[2])


def _worker_job() -> dict[str, Any]:
    return copy.deepcopy(k8s.render_example()[1])


def _typo_top(pod):
    pod["spec"]["restartPolcy"] = pod["spec"].pop("restartPolicy")


def _typo_container(pod):
    c = pod["spec"]["containers"][0]
    c["volumeMount"] = c.pop("volumeMounts")


def _typo_envfrom(pod):
    pod["spec"]["containers"][0]["envFrom"][0] = {"secretRefs": {"name": "rdtf-secrets"}}


def _wrong_type_port(pod):
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = "29400"


def _wrong_type_env(pod):
    pod["spec"]["containers"][0]["env"] = {"RDTF_LAKE_ROOT": "/lake"}  # a map, not a list of {name, value}


def _missing_required(pod):
    del pod["spec"]["containers"][0]["name"]


@pytest.mark.parametrize("breakage", [_typo_top, _typo_container, _typo_envfrom, _wrong_type_port, _wrong_type_env,
                                      _missing_required])
def test_broken_pod_fails_validation(breakage):
    pod = _head_pod()
    validate(pod, SUPPORTED_K8S_VERSIONS[-1])  # intact: passes
    breakage(pod)
    for version in SUPPORTED_K8S_VERSIONS:
        with pytest.raises(kv.ValidationError):
            validate(pod, version)


def test_broken_job_fails_and_strict_is_what_catches_a_typo():
    job = _worker_job()
    job["spec"]["completions"] = "2"  # wrong type
    with pytest.raises(kv.ValidationError):
        validate(job, SUPPORTED_K8S_VERSIONS[-1])

    typo = _worker_job()
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 300  # ...Seconds
    with pytest.raises(kv.ValidationError, match="terminationGracePeriod"):
        validate(typo, SUPPORTED_K8S_VERSIONS[-1])
    # the non-strict schemas accept unknown fields: strict=True is what turns a typo into a failure
    assert kv.validate(typo, SUPPORTED_K8S_VERSIONS[-1], strict=False) == SUPPORTED_K8S_VERSIONS[-1]


def test_a_version_newer_than_the_validator_is_refused():
    with pytest.raises(VersionNotSupportedError):
        kv.validate(_head_pod(), "9.99", strict=True)
