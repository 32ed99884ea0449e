"""The cluster side of a multi-node training: the Dagster Pipes client that launches the head pod and the context
manager that owns the worker Job and the rendezvous Service (builders and names: ``pipelines.k8s``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster_k8s import PipesK8sClient

from pipelines.k8s import PodResources, TrainingLaunch, group_name, training_env, training_launch


@dataclass(frozen=True)
class LocalTorchrun:
    """What ``assets/training.py`` asks for: ``PY -m torch.distributed.run <loopback opts> --nproc_per_node=N -m
    training.trainer --config CFG [--resume R]``."""

    python: str
    nproc_per_node: int
    config_path: str
    resume: str | None


def parse_local_torchrun(command: str | Sequence[str] | None) -> LocalTorchrun | None:
    """The single-node torchrun command of the training asset, or None for any other command."""
    if command is None or isinstance(command, str):
        return None
    cmd = list(command)
    if cmd[1:3] != ["-m", "torch.distributed.run"] or "training" not in cmd:
        return None
    cut = cmd.index("training")
    if cmd[cut - 1] != "-m":
        return None
    launcher, script = cmd[3: cut - 1], cmd[cut + 1:]
    nproc = 1
    for i, a in enumerate(launcher):
        if a.startswith(("--nproc_per_node", "--nproc-per-node")):
            nproc = int(a.split("=", 1)[1] if "=" in a else launcher[i + 1])

    def opt(name: str) -> str | None:
        return script[script.index(name) + 1] if name in script[:-1] else None
    config = opt("--config")
    if config is None:
        raise ValueError(f"training.trainer command without --config: {cmd}")
    return LocalTorchrun(python=cmd[0], nproc_per_node=nproc, config_path=config, resume=opt("--resume"))


class TorchrunK8sPipesClient(PipesK8sClient):
    """``PipesK8sClient`` that runs the training asset's torchrun on ``nnodes`` Kubernetes nodes.

    A drop-in for the ``pipes_subprocess_client`` resource: ``assets/training.py`` keeps calling
    ``client.run(command=<single-node torchrun>, context=context, env=env)``; this client turns the command into
    the multi-node launch (``training_launch``: ``--nproc_per_node`` becomes GPUs per node), creates the
    rendezvous Service and worker Job (``training_workers``), runs the head pod through Pipes and cleans up.
    Any other command goes to ``PipesK8sClient.run`` unchanged, in the default ``namespace``.
    """

    def __init__(
        self,
        *,
        namespace: str | None = None,
        image: str | None = None,
        nnodes: int = 1,
        pod_resources: PodResources = PodResources(),
        train_env: Mapping[str, str] | None = None,
        max_restarts: int = 3,
        core_api: Any = None,
        batch_api: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if nnodes < 1:
            raise ValueError(f"nnodes must be >= 1, got {nnodes}")
        self.namespace = namespace
        self.image = image
        self.nnodes = nnodes
        self.pod_resources = pod_resources
        # the pods' RDTF_LAKE_ROOT follows their lake (volume or bucket), not this process's environment
        self.train_env = dict(training_env(lake_root=pod_resources.lake_root) if train_env is None else train_env)
        self.max_restarts = max_restarts
        self._apis = (core_api, batch_api)

    def launch_for(self, context: Any, command: Sequence[str], env: Mapping[str, str] | None = None) -> TrainingLaunch:
        """The multi-node launch for the asset's ``command`` (pure: no cluster call)."""
        local = parse_local_torchrun(command)
        if local is None:
            raise ValueError(f"not a `torch.distributed.run -m training` command: {command}")
        image = self.image or os.environ.get("RDTF_IMAGE") or os.environ.get("DAGSTER_CURRENT_IMAGE")
        if not image:
            raise ValueError("no image for the training pods: set RDTF_IMAGE (or pass image=)")
        namespace = self.namespace or os.environ.get("RDTF_K8S_NAMESPACE") or "default"
        run_name = Path(local.config_path).parent.name  # lake/training/<run_name>/train.json
        group = group_name(run_name, getattr(context, "run_id", None), getattr(context, "retry_number", 0) or 0)
        # the asset's env (PYTHONPATH) + the pods' own (threads sized for the pod, NCCL, lake)
        merged = {**(env or {}), **self.train_env}
        return training_launch(image, self.nnodes, local.nproc_per_node, local.config_path, group=group,
                               namespace=namespace, env=merged, resources=self.pod_resources,
                               max_restarts=self.max_restarts, python=local.python, resume=local.resume)

    def run(self, *, context: Any, command: str | Sequence[str] | None = None, namespace: str | None = None,
            env: Mapping[str, str] | None = None, image: str | None = None, **kwargs: Any):  # type: ignore[override]
        if parse_local_torchrun(command) is None:
            return super().run(context=context, command=command, namespace=namespace or self.namespace, env=env,
                               image=image or self.image, **kwargs)
        launch = self.launch_for(context, command, env)  # type: ignore[arg-type]
        context.log.info(f"torchrun on {launch.nnodes} node(s) x {launch.gpus_per_node} GPU(s), group {launch.group} "
                         f"in namespace {launch.namespace}")
        core_api, batch_api = self._apis
        if launch.worker_job is not None and (core_api is None or batch_api is None):
            import kubernetes

            self._load_k8s_config()
            core_api, batch_api = core_api or kubernetes.client.CoreV1Api(), batch_api or kubernetes.client.BatchV1Api()
        with training_workers(launch, core_api, batch_api):
            return super().run(context=context, **launch.pipes_run_kwargs(), **kwargs)


def k8s_pipes_client(
    namespace: str | None = None,
    *,
    image: str | None = None,
    nnodes: int = 1,
    pod_resources: PodResources = PodResources(),
    load_incluster_config: bool | None = True,
    kubeconfig_file: str | None = None,
    kube_context: str | None = None,
    poll_interval: float = 10.0,
    env: Mapping[str, str] | None = None,
) -> TorchrunK8sPipesClient:
    """The Pipes client for Kubernetes (a ``dagster_k8s.PipesK8sClient``). Builds without a cluster: the kube
    config is loaded in ``run()``.

    In a pod (the K8sRunLauncher's run pods) keep ``load_incluster_config=True``; from a workstation pass
    ``load_incluster_config=False`` and optionally ``kubeconfig_file`` / ``kube_context``. ``env`` goes to every
    pod this client starts (``PipesK8sClient(env=...)``).
    """
    if load_incluster_config and (kubeconfig_file or kube_context):
        raise ValueError("kubeconfig_file/kube_context need load_incluster_config=False")
    return TorchrunK8sPipesClient(namespace=namespace, image=image, nnodes=nnodes, pod_resources=pod_resources,
                                  load_incluster_config=load_incluster_config, kubeconfig_file=kubeconfig_file,
                                  kube_context=kube_context, poll_interval=poll_interval, env=dict(env) if env else None)


def k8s_pipes_client_from_env() -> TorchrunK8sPipesClient:
    """``pipelines/resources.py`` with ``RDTF_LAUNCHER=k8s``: namespace, image, node count and pod shape from
    ``RDTF_K8S_NAMESPACE``, ``RDTF_IMAGE``, ``RDTF_TRAIN_NNODES`` (1), ``RDTF_TRAIN_CPU`` / ``RDTF_TRAIN_MEMORY``
    / ``RDTF_TRAIN_SHM``, ``RDTF_LAKE_PVC`` (rdtf-lake), ``RDTF_MODELS_PVC`` (none), and the lake: the training
    pods use the code server's own ``RDTF_LAKE_ROOT`` (/lake), so an ``s3://`` lake there means no volume in
    them, with credentials from the Secret ``RDTF_OBJECT_STORE_SECRET`` (rdtf-object-store; empty: none, for
    IRSA / Workload Identity), and ``RDTF_TRAIN_SCRATCH`` sizes their /scratch (100Gi)."""
    e = os.environ.get
    d = PodResources()
    res = PodResources(cpu=e("RDTF_TRAIN_CPU", d.cpu), memory=e("RDTF_TRAIN_MEMORY", d.memory), shm=e("RDTF_TRAIN_SHM", d.shm),
                       lake_pvc=e("RDTF_LAKE_PVC", d.lake_pvc), models_pvc=e("RDTF_MODELS_PVC") or None,
                       lake_root=e("RDTF_LAKE_ROOT") or d.lake_root,
                       object_store_secret=e("RDTF_OBJECT_STORE_SECRET", d.object_store_secret or "") or None,
                       scratch_size=e("RDTF_TRAIN_SCRATCH", d.scratch_size or "") or None)
    return k8s_pipes_client(e("RDTF_K8S_NAMESPACE") or None, image=e("RDTF_IMAGE") or None,
                            nnodes=int(e("RDTF_TRAIN_NNODES", "1")), pod_resources=res)


@contextlib.contextmanager
def training_workers(launch: TrainingLaunch, core_api: Any = None, batch_api: Any = None) -> Iterator[None]:
    """Create the rendezvous Service and the worker Job for the body (the Pipes head pod), delete them after.

    ``core_api`` / ``batch_api``: ``kubernetes.client.CoreV1Api`` / ``BatchV1Api`` (default: from the loaded kube
    config, e.g. ``dagster_k8s.DagsterKubernetesClient.production_client()``). Single-node trainings create
    nothing. Deletion runs whatever happened in the body, so a failed or cancelled run leaves no GPU pods.
    """
    if launch.worker_job is None:
        yield
        return
    if core_api is None or batch_api is None:
        import kubernetes

        core_api = core_api or kubernetes.client.CoreV1Api()
        batch_api = batch_api or kubernetes.client.BatchV1Api()
    ns = launch.namespace
    core_api.create_namespaced_service(ns, launch.service)
    try:
        batch_api.create_namespaced_job(ns, launch.worker_job)
        try:
            yield
        finally:
            batch_api.delete_namespaced_job(launch.worker_job["metadata"]["name"], ns, propagation_policy="Foreground")
    finally:
        core_api.delete_namespaced_service(launch.service["metadata"]["name"], ns)


