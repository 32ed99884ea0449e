"""Kubernetes deployment files and builders: validated against dagster-k8s's schemas, torch's torchrun parser
and the Kubernetes client models — no cluster needed (there is none in CI)."""

from __future__ import annotations

import inspect
import random

import pytest
import yaml

from pipelines import k8s, k8s_client
from tests.helpers import ROOT, write_kubeconfig

DEPLOY = ROOT / "deploy" / "k8s"


def _load(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


# ---------------------------------------------------------------------------------------------- instance


def test_instance_yaml_passes_dagster_instance_schema():
    from dagster._core.instance.config import dagster_instance_config

    cfg, custom = dagster_instance_config(str(DEPLOY), "dagster.yaml")
    assert custom is None
    assert set(cfg["storage"]) == {"postgres"}
    assert {v["env"] for v in cfg["storage"]["postgres"]["postgres_db"].values()} == {
        "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
    assert cfg["run_launcher"]["class"] == "K8sRunLauncher"
    assert cfg["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == "dagster/backfill"


def test_run_launcher_config_validates_against_k8s_run_launcher_schema(monkeypatch, tmp_path):
    from dagster import Shape
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    launcher = _load("dagster.yaml")["run_launcher"]
    assert launcher["module"] == "dagster_k8s"
    monkeypatch.setenv("RDTF_K8S_NAMESPACE", "rdtf")
    res = process_config(Shape(K8sRunLauncher.config_type()), launcher["config"])
    assert res.success, res.errors
    cfg = res.value
    assert cfg["job_namespace"] == "rdtf" and cfg["env_secrets"] == ["rdtf-secrets", "rdtf-object-store"]
    assert not cfg.get("volume_mounts") and not cfg.get("volumes")  # the lake is in object storage: no shared volume

    # a wrong key is caught: the check above is a real schema check
    bad = process_config(Shape(K8sRunLauncher.config_type()), {**launcher["config"], "job_namepsace": "x"})
    assert not bad.success

    # and the launcher builds from it (a kubeconfig file instead of the in-cluster service account)
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig)
    built = K8sRunLauncher(**{**cfg, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})
    assert built.job_namespace == "rdtf" and built.instance_config_map == "dagster-instance"


def _drop_job(executor):
    from dagster import Definitions

    from pipelines.definitions import defs
    from pipelines.jobs import drop_data_job
    from pipelines.resources import default_resources

    return Definitions(assets=list(defs.assets), jobs=[drop_data_job], resources=default_resources(),
                       executor=executor).resolve_job_def("drop_data_job")


def test_executor_config_validates_against_drop_data_job():
    from dagster import validate_run_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster_k8s import k8s_job_executor

    job = _drop_job(k8s_job_executor)
    cfg = _load("executor.yaml")
    validate_run_config(job, {"execution": {"config": cfg}, "ops": {"ingested_stickers": {"config": {"workers": 8}}}})
    per_step = cfg["per_step_k8s_config"]
    steps = {n.name for n in job.nodes}
    assert {"ingested_stickers", "frame_embeddings", "frame_clusters", "webdataset_shards"} <= set(per_step)
    assert set(per_step) - steps == {"evaluation_samples"}  # a train_job step; the rest are drop_data_job's
    gpu = per_step["frame_embeddings"]["container_config"]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    with pytest.raises(DagsterInvalidConfigError):  # a misspelled key is caught: the check is real
        validate_run_config(job, {"execution": {"config": {**cfg, "max_concurent": 4}}})

    # configured in code: every run (sensor, backfill, schedule) gets it with no run config
    configured = _drop_job(k8s.k8s_executor())
    assert configured.executor_def.name == "k8s_rdtf"
    validate_run_config(configured, {})


def test_launcher_switch(monkeypatch):
    monkeypatch.delenv("RDTF_LAUNCHER", raising=False)
    assert k8s.launcher() == "local" and k8s.default_executor() is None
    monkeypatch.setenv("RDTF_LAUNCHER", "K8s")
    assert k8s.launcher() == "k8s" and k8s.default_executor().name == "k8s_rdtf"
    monkeypatch.setenv("RDTF_LAUNCHER", "slurm")
    with pytest.raises(ValueError, match="RDTF_LAUNCHER"):
        k8s.launcher()


# ---------------------------------------------------------------------------------------------- helm values

# Field names of the official chart's schema (helm/dagster/schema/schema/charts/...: values.py, run_launcher.py
# K8sRunLauncherConfig, user_deployments.py UserDeployment, postgresql.py, concurrency.py).
CHART_TOP = {"global", "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
             "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
             "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
             "telemetry", "serviceAccount", "retention", "additionalInstanceConfig", "concurrency"}
CHART_K8S_LAUNCHER = {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                      "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                      "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"}
CHART_USER_DEPLOYMENT = {"name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port",
                         "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
                         "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
                         "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName"}
CHART_POSTGRES = {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
                  "postgresqlParams", "postgresqlScheme", "service"}


def test_helm_values_use_chart_fields_and_match_the_instance_file():
    values = _load("values.yaml")
    assert set(values) <= CHART_TOP
    rl = values["runLauncher"]
    assert rl["type"] == "K8sRunLauncher" and set(rl["config"]) == {"k8sRunLauncher"}
    k = rl["config"]["k8sRunLauncher"]
    assert set(k) <= CHART_K8S_LAUNCHER
    (dep,) = values["dagster-user-deployments"]["deployments"]
    assert set(dep) <= CHART_USER_DEPLOYMENT
    assert dep["dagsterApiGrpcArgs"] == ["-m", "pipelines.definitions"]  # the module workspace.yaml loads
    assert {"name": "RDTF_LAUNCHER", "value": "k8s"} in dep["env"]
    assert set(values["postgresql"]) <= CHART_POSTGRES and values["postgresql"]["enabled"] is False

    # the Helm-rendered instance and deploy/k8s/dagster.yaml describe the same deployment
    inst = _load("dagster.yaml")["run_launcher"]["config"]
    assert k["jobNamespace"] == "rdtf"
    assert [s["name"] for s in k["envSecrets"]] == inst["env_secrets"]
    assert [c["name"] for c in k["envConfigMaps"]] == inst["env_config_maps"]
    assert k.get("volumes") == inst.get("volumes") and k.get("volumeMounts") == inst.get("volume_mounts")
    lake = next(e["value"] for e in dep["env"] if e["name"] == "RDTF_LAKE_ROOT")
    assert lake.startswith("s3://") and not dep.get("volumes")  # the code server (and so the training pods) too
    assert k["resources"] == inst["resources"]
    conc = _load("dagster.yaml")["concurrency"]
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == conc["runs"]["max_concurrent_runs"]
    assert values["concurrency"]["pools"]["defaultLimit"] == conc["pools"]["default_limit"]


# ---------------------------------------------------------------------------------------------- torchrun


def _parse(cmd: list[str]):
    from torch.distributed.run import config_from_args, get_args_parser

    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(cmd[3:])
    return args, config_from_args(args)


def test_torchrun_command_multi_node_parses_with_torchrun():
    ep = k8s.rendezvous_endpoint("rdtf-x", "rdtf")
    cmd = k8s.torchrun_command(4, 8, ep, "/lake/training/x/train.json", rdzv_id="rdtf-x",
                               local_addr="rdtf-x-head.rdtf-x.rdtf.svc.cluster.local", is_host=True, max_restarts=2)
    args, (config, entry, entry_args) = _parse(cmd)
    assert args.module and args.training_script == "training"
    assert args.training_script_args == ["--config", "/lake/training/x/train.json", "--resume", "latest"]
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (4, 4, 8)
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "rdtf-x-head.rdtf-x.rdtf.svc.cluster.local:29400"
    assert config.run_id == "rdtf-x" and config.max_restarts == 2
    assert config.rdzv_configs["is_host"] == "true" and config.rdzv_configs["join_timeout"] == "900"
    assert config.local_addr == "rdtf-x-head.rdtf-x.rdtf.svc.cluster.local"


def test_torchrun_command_single_node_is_loopback_only_like_the_local_asset():
    from training.launch import LOCAL_RDZV_ARGS

    cmd = k8s.torchrun_command(1, 2, None, "cfg.json", python="/usr/bin/python3")
    assert cmd[0] == "/usr/bin/python3" and "--standalone" not in cmd and set(LOCAL_RDZV_ARGS) <= set(cmd)
    args, (config, _, _) = _parse(cmd)
    assert not args.standalone and config.nproc_per_node == 2 and config.local_addr == "127.0.0.1"
    assert config.rdzv_configs["store_type"] == "file"  # no TCPStore for the rendezvous
    assert k8s.torchrun_command(1, 1, None, "c.json", resume=None)[-2:] == ["--config", "c.json"]


@pytest.mark.parametrize("kwargs", [dict(nnodes=0), dict(nproc_per_node=0), dict(nnodes=2, rdzv_endpoint=None),
                                    dict(rdzv_endpoint="no-port"), dict(rdzv_endpoint="host:abc")])
def test_torchrun_command_rejects_bad_arguments(kwargs):
    base = dict(nnodes=2, nproc_per_node=8, rdzv_endpoint="h:29400", config_path="c.json")
    with pytest.raises(ValueError):
        k8s.torchrun_command(**{**base, **kwargs})


@pytest.mark.parametrize("nnodes", [2, 3, 12, 33])
def test_head_node_gets_global_rank_zero_in_c10d_ordering(nnodes):
    """torch's c10d rendezvous ranks nodes by sorted node descriptors (addr first): the head must sort first."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc

    group, ns = k8s.group_name("paper-run", "5f3c9e2a-1b"), "rdtf"
    launch = k8s.training_launch("img", nnodes, 8, "/lake/c.json", group=group, namespace=ns)
    head_addr = next(c.split("=", 1)[1] for c in launch.command if c.startswith("--local-addr="))
    worker_cmd = launch.worker_job["spec"]["template"]["spec"]["containers"][0]["command"]
    worker_tpl = next(c.split("=", 1)[1] for c in worker_cmd if c.startswith("--local-addr="))
    rng = random.Random(nnodes)
    nodes = [_NodeDesc(head_addr, rng.randint(1, 1 << 22), 0)]
    nodes += [_NodeDesc(worker_tpl.replace("$(RDTF_NODE_INDEX)", str(i)), rng.randint(1, 1 << 22), 0)
              for i in range(nnodes - 1)]
    rng.shuffle(nodes)
    assert sorted(nodes)[0].addr == head_addr


def test_group_names_are_dns_labels():
    for run_name, run_id in [("default", None), ("Paper_Run 1", "ABCDEF12-3456"), ("x" * 200, "0123456789abcdef")]:
        g = k8s.group_name(run_name, run_id)
        assert k8s._DNS_LABEL.match(g) and len(g) <= 40
        assert len(f"{k8s.worker_job_name(g)}-999") <= 63
    assert k8s.group_name("a", "0123abcd-ef") != k8s.group_name("a", "9999abcd-ef")
    assert k8s.group_name("a", "0123abcd-ef", attempt=2) == "rdtf-a-0123abcd-r2"  # a retry never meets old objects
    with pytest.raises(ValueError):
        k8s.training_pod_spec("img", 1, 1, group="Not_A_Label")


# ---------------------------------------------------------------------------------------------- pod specs


def _strict(model_name: str, body: dict):
    """Convert with dagster-k8s's strict converter: unknown or misspelled fields raise."""
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    model = getattr(kubernetes.client, model_name)
    return k8s_model_from_dict(model, k8s_snake_case_dict(model, body))


def test_training_pod_spec_structure_and_kubernetes_schema():
    spec = k8s.training_pod_spec("img:1", 2, 8, group="rdtf-g")
    (c,) = spec["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8" and c["resources"]["requests"]["nvidia.com/gpu"] == "8"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert {"name": "lake", "mountPath": "/lake"} in c["volumeMounts"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory" and vols["lake"]["persistentVolumeClaim"]["claimName"]
    assert spec["restartPolicy"] == "Never" and spec["hostname"] == "rdtf-g-head" and spec["subdomain"] == "rdtf-g"
    assert "command" not in c  # the head's command comes from PipesK8sClient.run(command=...)
    assert "affinity" in spec
    pod = _strict("V1PodSpec", spec)
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "8"

    one = k8s.training_pod_spec("img", 1, 0, group="rdtf-g",
                                resources=k8s.PodResources(models_pvc="weights", service_account="trainer"))
    assert "affinity" not in one and "nvidia.com/gpu" not in one["containers"][0]["resources"]["limits"]
    assert one["serviceAccountName"] == "trainer" and any(v["name"] == "models" for v in one["volumes"])
    _strict("V1PodSpec", one)


def test_training_env_has_nccl_and_lake_settings():
    env = k8s.training_env(mlflow_tracking_uri="http://mlflow:5000", extra={"RDTF_X": "1"})
    assert env["RDTF_LAKE_ROOT"] == "/lake" and env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["RDTF_X"] == "1" and all(isinstance(v, str) for v in env.values())


def test_multi_node_launch_objects_pass_kubernetes_models():
    launch = k8s.training_launch("img:1", 3, 8, "/lake/training/r/train.json", group="rdtf-r-1234", namespace="rdtf")
    svc = _strict("V1Service", launch.service)
    assert svc.spec.cluster_ip == "None" and svc.spec.selector == {k8s.GROUP_LABEL: "rdtf-r-1234"}
    job = _strict("V1Job", launch.worker_job)
    assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == ("Indexed", 2, 2)
    wspec = launch.worker_job["spec"]["template"]["spec"]
    assert "hostname" not in wspec and wspec["subdomain"] == "rdtf-r-1234"  # Kubernetes names them <job>-<index>
    env = {e["name"]: e for e in wspec["containers"][0]["env"]}
    assert k8s.INDEX_ANNOTATION in env["RDTF_NODE_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    _, (wconf, _, _) = _parse(wspec["containers"][0]["command"])
    _, (hconf, _, _) = _parse(launch.command)
    assert wconf.rdzv_endpoint == hconf.rdzv_endpoint and wconf.run_id == hconf.run_id == "rdtf-r-1234"
    assert (hconf.rdzv_configs["is_host"], wconf.rdzv_configs["is_host"]) == ("true", "false")
    assert hconf.rdzv_endpoint.startswith(launch.base_pod_spec["hostname"] + ".rdtf-r-1234.rdtf.svc")


def test_head_pod_as_pipes_k8s_client_builds_it():
    """dagster-k8s's own pod builder accepts the launch's base_pod_spec, image, command and env."""
    from dagster_k8s.pipes import build_pod_body

    launch = k8s.training_launch("img:1", 2, 8, "/lake/c.json", group="rdtf-r", namespace="rdtf")
    kw = launch.pipes_run_kwargs()
    pod = build_pod_body(pod_name="dagster-abc-trained-model-1", image=kw["image"], command=kw["command"],
                         env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg", **kw["env"]},
                         base_pod_meta=kw["base_pod_meta"], base_pod_spec=kw["base_pod_spec"])
    (c,) = pod.spec.containers
    assert c.image == "img:1" and c.command == launch.command and c.name == k8s.CONTAINER_NAME
    names = [e.name for e in c.env]
    assert "DAGSTER_PIPES_CONTEXT" in names and "NCCL_SOCKET_IFNAME" in names
    assert pod.spec.hostname == "rdtf-r-head" and pod.spec.restart_policy == "Never"
    assert pod.metadata.labels[k8s.ROLE_LABEL] == "head"


def test_pipes_k8s_client_builds_without_a_cluster_and_matches_run_signature():
    from dagster_k8s import PipesK8sClient

    client = k8s_client.k8s_pipes_client("rdtf", image="img:1", nnodes=2)
    assert isinstance(client, PipesK8sClient) and client.namespace == "rdtf" and client.load_incluster_config
    assert client.nnodes == 2 and client.image == "img:1"
    local = k8s_client.k8s_pipes_client(load_incluster_config=False, kubeconfig_file="/tmp/kc", kube_context="dev")
    assert local.kubeconfig_file == "/tmp/kc" and local.kube_context == "dev"
    with pytest.raises(ValueError):
        k8s_client.k8s_pipes_client(kubeconfig_file="/tmp/kc")
    with pytest.raises(ValueError):
        k8s_client.k8s_pipes_client(nnodes=0)
    params = inspect.signature(PipesK8sClient.run).parameters
    launch = k8s.training_launch("i", 1, 1, "c.json", group="rdtf-a", namespace="n")
    assert set(launch.pipes_run_kwargs()) | {"context"} <= set(params)


def test_client_from_env(monkeypatch):
    monkeypatch.setenv("RDTF_K8S_NAMESPACE", "prod")
    monkeypatch.setenv("RDTF_IMAGE", "reg/rdtf:7")
    monkeypatch.setenv("RDTF_TRAIN_NNODES", "4")
    monkeypatch.setenv("RDTF_TRAIN_MEMORY", "900Gi")
    monkeypatch.setenv("RDTF_MODELS_PVC", "weights")
    c = k8s_client.k8s_pipes_client_from_env()
    assert (c.namespace, c.image, c.nnodes) == ("prod", "reg/rdtf:7", 4)
    assert c.pod_resources.memory == "900Gi" and c.pod_resources.models_pvc == "weights"


# the command assets/training.py builds today
ASSET_CMD = ["/venv/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "-m", "training",
             "--config", "/lake/training/paper/train.json", "--resume", "latest"]


def test_parse_local_torchrun():
    p = k8s_client.parse_local_torchrun(ASSET_CMD)
    assert p == k8s_client.LocalTorchrun("/venv/bin/python", 8, "/lake/training/paper/train.json", "latest")
    spaced = ["py", "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "training", "--config", "c.json"]
    assert k8s_client.parse_local_torchrun(spaced) == k8s_client.LocalTorchrun("py", 2, "c.json", None)
    assert k8s_client.parse_local_torchrun(["python", "script.py"]) is None
    assert k8s_client.parse_local_torchrun("python -m training") is None
    with pytest.raises(ValueError):
        k8s_client.parse_local_torchrun(["py", "-m", "torch.distributed.run", "-m", "training"])


class _Ctx:
    run_id = "9f1e2d3c-aaaa-bbbb"
    retry_number = 1

    class log:  # noqa: N801 - mimics context.log
        @staticmethod
        def info(msg):
            pass


def test_torchrun_client_turns_the_asset_command_into_a_multi_node_launch(monkeypatch):
    from dagster_k8s import PipesK8sClient

    calls, log = [], []
    monkeypatch.setattr(PipesK8sClient, "run", lambda self, **kw: calls.append(kw) or "done")
    client = k8s_client.k8s_pipes_client("rdtf", image="img:2", nnodes=3)
    client._apis = (_FakeApi(log), _FakeApi(log))
    out = client.run(command=ASSET_CMD, context=_Ctx(), env={"PYTHONPATH": "/app", "OMP_NUM_THREADS": "64"})
    assert out == "done"
    (kw,) = calls
    group = "rdtf-paper-9f1e2d3c-r1"
    assert kw["image"] == "img:2" and kw["namespace"] == "rdtf" and kw["base_pod_spec"]["hostname"] == f"{group}-head"
    assert kw["env"]["PYTHONPATH"] == "/app" and kw["env"]["OMP_NUM_THREADS"] == "4"  # pod-sized, not the run pod's
    _, (conf, _, args) = _parse(kw["command"])
    assert (conf.min_nodes, conf.nproc_per_node, conf.run_id) == (3, 8, group)
    assert kw["command"][0] == "/venv/bin/python" and args[-4:] == ["--config", "/lake/training/paper/train.json",
                                                                     "--resume", "latest"]
    assert [n for n, _ in log] == ["create_namespaced_service", "create_namespaced_job", "delete_namespaced_job",
                                   "delete_namespaced_service"]

    # any other command: plain PipesK8sClient.run in the default namespace
    calls.clear()
    client.run(command=["python", "other.py"], context=_Ctx())
    assert calls[0]["command"] == ["python", "other.py"] and calls[0]["namespace"] == "rdtf"


def test_torchrun_client_single_node_needs_an_image(monkeypatch):
    monkeypatch.delenv("RDTF_IMAGE", raising=False)
    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE", raising=False)
    with pytest.raises(ValueError, match="RDTF_IMAGE"):
        k8s_client.k8s_pipes_client().launch_for(_Ctx(), ASSET_CMD)
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "cur:1")
    launch = k8s_client.k8s_pipes_client().launch_for(_Ctx(), ASSET_CMD)
    assert launch.image == "cur:1" and launch.worker_job is None and "--local-addr=127.0.0.1" in launch.command
    assert launch.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # the agent hosts no TCPStore either


class _FakeApi:
    def __init__(self, log: list):
        self.log = log

    def __getattr__(self, name):
        return lambda *a, **kw: self.log.append((name, a[0] if a else None))


def test_training_workers_creates_and_always_deletes():
    log: list = []
    launch = k8s.training_launch("img", 2, 8, "c.json", group="rdtf-w", namespace="rdtf")
    with pytest.raises(RuntimeError), k8s_client.training_workers(launch, _FakeApi(log), _FakeApi(log)):
        assert [n for n, _ in log] == ["create_namespaced_service", "create_namespaced_job"]
        raise RuntimeError("training failed")
    assert [n for n, _ in log] == ["create_namespaced_service", "create_namespaced_job", "delete_namespaced_job",
                                   "delete_namespaced_service"]
    assert log[2][1] == "rdtf-w-worker" and log[3][1] == "rdtf-w"

    single: list = []
    with k8s_client.training_workers(k8s.training_launch("img", 1, 8, "c.json", group="rdtf-w", namespace="rdtf"),
                              _FakeApi(single), _FakeApi(single)):
        pass
    assert single == []


@pytest.mark.parametrize("name", sorted(k8s.EXAMPLES))
def test_train_pod_example_files_are_current(name):
    """deploy/k8s/train-pod.yaml (object-store lake) and train-pod-nfs.yaml: `python -m pipelines.k8s NAME`."""
    assert (DEPLOY / name).read_text() == k8s.render_example_file(name)
    docs = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert docs == k8s.render_example(lake_root=k8s.EXAMPLES[name])
    assert [d["kind"] for d in docs] == ["Service", "Job", "Pod"]


def test_unchanged_training_asset_runs_through_the_k8s_client(tmp_path, monkeypatch):
    """assets/training.py as it is + TorchrunK8sPipesClient as its Pipes resource -> a multi-node launch."""
    from dagster import MaterializeResult, materialize
    from dagster_k8s import PipesK8sClient

    from assets.resources import LakeResource, MlflowResource
    from assets.training import trained_model

    class _NoMlflow(MlflowResource):
        def ensure_experiment(self) -> str:
            return "0"

    class _Done:
        def get_materialize_result(self):
            return MaterializeResult(metadata={"final_step": 10})

    seen, log = [], []
    monkeypatch.setattr(PipesK8sClient, "run", lambda self, **kw: seen.append(kw) or _Done())
    (tmp_path / "shards" / "drop-1").mkdir(parents=True)
    (tmp_path / "shards" / "drop-1" / "index.json").write_text("{}")
    client = k8s_client.k8s_pipes_client("rdtf", image="img:3", nnodes=2)
    client._apis = (_FakeApi(log), _FakeApi(log))
    result = materialize(
        [trained_model],
        resources={"storage": LakeResource(drops_root=str(tmp_path / "drops"), lake_root=str(tmp_path)),
                   "mlflow": _NoMlflow(tracking_uri="sqlite:///unused.db"), "pipes_subprocess_client": client},
        run_config={"ops": {"trained_model": {"config": {"nproc_per_node": 8, "run_name": "paper"}}}},
    )
    assert result.success
    (kw,) = seen
    _, (conf, _, args) = _parse(kw["command"])
    assert (conf.min_nodes, conf.nproc_per_node) == (2, 8)
    assert args[-4:] == ["--config", str(tmp_path / "training" / "paper" / "train.json"), "--resume", "latest"]
    assert conf.run_id == k8s.group_name("paper", result.run_id)
    assert "PYTHONPATH" in kw["env"] and kw["image"] == "img:3"
    assert [n for n, _ in log] == ["create_namespaced_service", "create_namespaced_job", "delete_namespaced_job",
                                   "delete_namespaced_service"]
