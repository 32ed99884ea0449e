"""Kubernetes scale-out: multi-node ``torchrun`` through Dagster Pipes, and the per-step pods of the data stages.

Pure builders (dicts and argument lists) plus thin wrappers around the Kubernetes API; importing this module
and building everything needs no cluster (tests: ``tests/pipelines/test_k8s.py``). See ``docs/scale-out.md``
for the deployment as a whole and ``deploy/k8s/`` for the instance and Helm files.

``pipelines.k8s_client.TorchrunK8sPipesClient`` (``k8s_pipes_client`` / ``k8s_pipes_client_from_env``) is a drop-in for the
``pipes_subprocess_client`` resource: the training asset's unchanged ``client.run(command=<single-node
torchrun>, context=..., env=...)`` becomes the multi-node launch below.

One training of ``nnodes`` nodes x ``gpus_per_node`` GPUs (``training_launch``)::

    Dagster run pod (K8sRunLauncher)
      |-- training_workers(): headless Service <group>           stable DNS names for the rendezvous
      |                       Indexed Job <group>-worker         nodes 1..N-1, one pod each
      '-- PipesK8sClient.run(): head pod <group>-head            node 0, hosts the c10d rendezvous store

Every pod runs the same ``torchrun --nnodes N --rdzv-backend c10d --rdzv-endpoint <group>-head.<group>.<ns>
.svc.cluster.local:29400 -m training --config ... --resume latest``. The c10d rendezvous numbers the nodes in
sorted order of their ``--local-addr`` (``torch.distributed.elastic.rendezvous.dynamic_rendezvous``), so
each pod passes its own DNS name and the head's ``<group>-head`` sorts before ``<group>-worker-<i>``: global
rank 0 — the rank that reports the materialization through Pipes — always runs in the Pipes pod, whose log
the Dagster run reads. Worker pods get no Pipes context (``training.trainer`` then skips reporting).

The lake must be the *same root* in every pod (the training config lists absolute shard-index paths and the
output folder). ``PodResources.lake_root`` decides how it gets there (``pipelines.k8s_lake``): an object-store
URL (``s3://bucket/lake``) needs no volume, only credentials from the Secret ``rdtf-object-store``
(``envFrom``); a local/NFS path is one ReadWriteMany claim mounted at that path everywhere. Every training pod
also gets a node-local scratch ``emptyDir`` at ``/scratch`` (``RDTF_SCRATCH``) for checkpoint staging.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.k8s_lake import LAKE_MOUNT, OBJECT_STORE_SECRET, SCRATCH_MOUNT, lake_storage
from training.launch import LOCAL_RDZV_ARGS, LOCAL_TORCHRUN_ENV

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
LAUNCHERS = ("local", "k8s")
# Cluster versions the manifests are checked against (Kubernetes API OpenAPI schemas through kubernetes-validate,
# strict: tests/pipelines/test_k8s_schema.py): the three newest minor versions the installed validator ships.
SUPPORTED_K8S_VERSIONS = ("1.35", "1.36", "1.37")
RDZV_PORT = 29400
CONTAINER_NAME = "rdtf-train"
APP_LABEL = "rdtf-stickers"
GROUP_LABEL = "rdtf.io/train-group"
ROLE_LABEL = "rdtf.io/role"
GPU_RESOURCE = "nvidia.com/gpu"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_GROUP = 40  # "<group>-worker-<index>" must stay a DNS label (<= 63 characters)


# ----------------------------------------------------------------------------------------------- launcher


def launcher() -> str:
    """``RDTF_LAUNCHER``: ``local`` (default: subprocesses on this machine) or ``k8s``."""
    value = os.environ.get("RDTF_LAUNCHER", "local").strip().lower() or "local"
    if value not in LAUNCHERS:
        raise ValueError(f"RDTF_LAUNCHER must be one of {LAUNCHERS}, got {value!r}")
    return value


def k8s_executor(config_path: str | Path = DEPLOY_DIR / "executor.yaml"):
    """``k8s_job_executor`` configured from ``deploy/k8s/executor.yaml``: one pod per step, sized per stage."""
    import yaml
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(yaml.safe_load(Path(config_path).read_text()), name="k8s_rdtf")


def default_executor():
    """The Definitions' executor: ``k8s_executor()`` with ``RDTF_LAUNCHER=k8s``, else None (Dagster's default)."""
    return k8s_executor() if launcher() == "k8s" else None


# ----------------------------------------------------------------------------------------------- names


def group_name(run_name: str, run_id: str | None = None, attempt: int = 0) -> str:
    """A DNS-1123 label naming one training's pods, Service and Job: ``rdtf-<run_name>[-<run id>][-r<attempt>]``.

    ``attempt`` (the op's retry number) keeps a retry's objects apart from those of a killed earlier attempt.
    """
    base = re.sub(r"[^a-z0-9-]+", "-", f"rdtf-{run_name}".lower()).strip("-")
    suffix = "-".join(x for x in (re.sub(r"[^a-z0-9]", "", (run_id or "").lower())[:8],
                                  f"r{attempt}" if attempt else "") if x)
    base = base[: _MAX_GROUP - (len(suffix) + 1 if suffix else 0)].rstrip("-")
    return f"{base}-{suffix}" if suffix else base


def _check_group(group: str) -> None:
    if not _DNS_LABEL.match(group) or len(group) > _MAX_GROUP:
        raise ValueError(f"group {group!r} must be a DNS-1123 label of at most {_MAX_GROUP} characters (see group_name)")


def head_hostname(group: str) -> str:
    return f"{group}-head"


def worker_job_name(group: str) -> str:
    return f"{group}-worker"


def node_fqdn(hostname: str, group: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """DNS name of a pod with ``hostname`` and ``subdomain: <group>`` behind the headless Service ``<group>``."""
    return f"{hostname}.{group}.{namespace}.svc.{cluster_domain}"


def rendezvous_endpoint(group: str, namespace: str, port: int = RDZV_PORT, cluster_domain: str = "cluster.local") -> str:
    return f"{node_fqdn(head_hostname(group), group, namespace, cluster_domain)}:{port}"


# ----------------------------------------------------------------------------------------------- torchrun


def torchrun_command(
    nnodes: int,
    nproc_per_node: int,
    rdzv_endpoint: str | None,
    config_path: str,
    *,
    rdzv_id: str = "rdtf-train",
    local_addr: str | None = None,
    is_host: bool | None = None,
    max_restarts: int = 3,
    join_timeout_s: int = 900,
    python: str = "python",
    resume: str | None = "latest",
) -> list[str]:
    """``python -m torch.distributed.run ... -m training --config CONFIG --resume latest``.

    ``nnodes > 1``: c10d rendezvous at ``rdzv_endpoint`` (``host:port``), ``rdzv_id`` shared by all nodes of one
    training, ``local_addr`` = this node's DNS name (orders node ranks, see the module docstring), ``is_host``
    = whether this node runs the rendezvous store. ``nnodes == 1`` with no endpoint: the loopback-only launch of
    ``training.launch``, like ``assets/training.py`` (``--standalone`` would listen on every interface of the pod;
    ``training_launch`` adds ``LOCAL_TORCHRUN_ENV``). ``max_restarts``: torchrun restarts the worker group that often after a
    failure; every restart resumes from the latest checkpoint (``--resume latest``).
    """
    if nnodes < 1 or nproc_per_node < 1:
        raise ValueError(f"nnodes and nproc_per_node must be >= 1, got {nnodes}, {nproc_per_node}")
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    cmd = [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}"]
    if rdzv_endpoint is None:
        if nnodes > 1:
            raise ValueError("a multi-node run needs rdzv_endpoint (host:port of the head node)")
        cmd += LOCAL_RDZV_ARGS  # single node: rendezvous and stores on 127.0.0.1 only (training.launch)
    else:
        host, sep, port = rdzv_endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"rdzv_endpoint must be host:port, got {rdzv_endpoint!r}")
        conf = [f"join_timeout={join_timeout_s}"] + ([f"is_host={str(is_host).lower()}"] if is_host is not None else [])
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}",
                f"--rdzv-conf={','.join(conf)}"]
        if local_addr:
            cmd.append(f"--local-addr={local_addr}")
    cmd += [f"--max-restarts={max_restarts}", "-m", "training", "--config", str(config_path)]
    if resume:
        cmd += ["--resume", resume]
    return cmd


def training_env(
    *,
    lake_root: str = LAKE_MOUNT,
    mlflow_tracking_uri: str | None = None,
    omp_threads: int = 4,
    nccl_socket_ifname: str | None = "eth0",
    nccl_debug: str = "WARN",
    extra: Mapping[str, str] | None = None,
    scratch: str | None = SCRATCH_MOUNT,
) -> dict[str, str]:
    """Plain environment of every training container (secrets come in through ``envFrom``).

    ``lake_root`` must match the pods' ``PodResources.lake_root`` (``training_launch`` checks it); ``scratch``
    is the node-local staging directory (``RDTF_SCRATCH``; None leaves it unset).
    """
    env = {
        "RDTF_LAKE_ROOT": lake_root,
        "PYTHONUNBUFFERED": "1",  # Pipes messages and logs reach the pod log at once
        "OMP_NUM_THREADS": str(omp_threads),
        "NCCL_DEBUG": nccl_debug,
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a dead peer raises instead of hanging the collective
        # after an elastic restart with a replaced node, the agent store shared from the first rendezvous round
        # left the second round waiting for MASTER_ADDR forever (tests/integration/test_multinode.py); without
        # sharing, every round publishes a fresh MASTER_ADDR/PORT for the workers
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    if nccl_socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = nccl_socket_ifname  # the pod network interface for NCCL's bootstrap/TCP
    if scratch:
        env["RDTF_SCRATCH"] = scratch
    if mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------------------------- pods


@dataclass(frozen=True)
class PodResources:
    """Per-node pod shape. ``shm`` backs /dev/shm (NCCL and DataLoader workers need more than Docker's 64 MiB)."""

    cpu: str = "16"
    memory: str = "200Gi"
    shm: str = "64Gi"
    lake_pvc: str = "rdtf-lake"  # ReadWriteMany claim mounted at lake_root, only when that is a local/NFS path
    models_pvc: str | None = None  # optional read-only weights (CLIP, T5, VAE) mounted at /models
    env_secrets: tuple[str, ...] = ("rdtf-secrets",)  # MLFLOW_TRACKING_URI, object-store credentials, ...
    service_account: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)
    termination_grace_s: int = 300  # SIGTERM -> training.trainer writes a checkpoint and exits
    # the lake as every pod sees it: a path (lake_pvc mounted there) or an object-store URL (no volume)
    lake_root: str = LAKE_MOUNT
    # Secret with the object-store credentials (envFrom) for an object-store lake_root; None: the platform
    # provides them (IRSA / Workload Identity), no Secret
    object_store_secret: str | None = OBJECT_STORE_SECRET
    scratch_size: str | None = "100Gi"  # node-local /scratch emptyDir (checkpoint staging); None: unbounded


def pod_labels(group: str, role: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP_LABEL, GROUP_LABEL: group, ROLE_LABEL: role}


def training_pod_spec(
    image: str,
    nnodes: int,
    gpus_per_node: int,
    *,
    group: str,
    role: str = "head",
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    resources: PodResources = PodResources(),
) -> dict[str, Any]:
    """A PodSpec (camelCase, as the Kubernetes API and ``PipesK8sClient.run(base_pod_spec=...)`` take it).

    ``role="head"``: node 0, ``hostname: <group>-head``; the command is left to ``PipesK8sClient.run(command=)``
    unless given. ``role="worker"``: template of the Indexed Job's pods (hostname ``<group>-worker-<index>``,
    set by Kubernetes), with ``RDTF_NODE_INDEX`` from the completion index. Both carry ``subdomain: <group>``
    (DNS through the headless Service), GPU limits, a memory-backed /dev/shm, node-local /scratch, the lake
    (``resources.lake_root``: a PVC for a path, nothing but the credentials Secret for an object store), and pod
    anti-affinity so that two nodes of one training never share a machine.
    """
    _check_group(group)
    if role not in ("head", "worker"):
        raise ValueError(f"role must be 'head' or 'worker', got {role!r}")
    if nnodes < 1 or gpus_per_node < 0:
        raise ValueError(f"nnodes must be >= 1 and gpus_per_node >= 0, got {nnodes}, {gpus_per_node}")
    r = resources
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    if role == "worker":
        env_list.append({"name": "RDTF_NODE_INDEX",
                         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}})
    limits: dict[str, str] = {"cpu": r.cpu, "memory": r.memory}
    if gpus_per_node:
        limits[GPU_RESOURCE] = str(gpus_per_node)
    lake = lake_storage(r.lake_root, lake_pvc=r.lake_pvc, object_store_secret=r.object_store_secret,
                        scratch_size=r.scratch_size)
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, *lake.volume_mounts]
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": r.shm}},
                                     *lake.volumes]
    env_from = [{"secretRef": {"name": s}} for s in r.env_secrets]
    env_from += [e for e in lake.env_from if e not in env_from]  # one Secret named twice: list it once
    if r.models_pvc:
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": r.models_pvc, "readOnly": True}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "env": env_list,
        "envFrom": env_from,
        "resources": {"limits": limits, "requests": dict(limits)},
        "volumeMounts": mounts,
        "ports": [{"name": "c10d", "containerPort": RDZV_PORT}],
    }
    if command is not None:
        container["command"] = list(command)
    spec: dict[str, Any] = {
        "containers": [container],
        "restartPolicy": "Never",  # PipesK8sClient refuses Always; torchrun restarts workers in place
        "subdomain": group,
        "volumes": volumes,
        "tolerations": [dict(t) for t in r.tolerations],
        "terminationGracePeriodSeconds": r.termination_grace_s,
    }
    if role == "head":
        spec["hostname"] = head_hostname(group)
    if nnodes > 1:
        spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {GROUP_LABEL: group}}, "topologyKey": "kubernetes.io/hostname"}]}}
    if r.node_selector:
        spec["nodeSelector"] = dict(r.node_selector)
    if r.service_account:
        spec["serviceAccountName"] = r.service_account
    return spec


def rendezvous_service_manifest(group: str, namespace: str, port: int = RDZV_PORT) -> dict[str, Any]:
    """Headless Service ``<group>``: gives every pod of the training ``<hostname>.<group>.<ns>.svc`` DNS names."""
    _check_group(group)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": group, "namespace": namespace, "labels": pod_labels(group, "rendezvous")},
        "spec": {
            "clusterIP": "None",
            "selector": {GROUP_LABEL: group},
            "publishNotReadyAddresses": True,  # resolvable before the pods are Ready: the rendezvous starts first
            "ports": [{"name": "c10d", "port": port, "targetPort": port}],
        },
    }


def worker_job_manifest(
    image: str,
    nnodes: int,
    gpus_per_node: int,
    config_path: str,
    *,
    group: str,
    namespace: str,
    env: Mapping[str, str] | None = None,
    resources: PodResources = PodResources(),
    max_restarts: int = 3,
    backoff_limit: int = 0,
    ttl_after_finished_s: int = 3600,
    python: str = "python",
    resume: str | None = "latest",
) -> dict[str, Any]:
    """Indexed Job with the ``nnodes - 1`` worker nodes; each joins the head's c10d rendezvous."""
    if nnodes < 2:
        raise ValueError("worker_job_manifest is for multi-node trainings (nnodes >= 2)")
    job = worker_job_name(group)
    command = torchrun_command(
        nnodes, gpus_per_node, rendezvous_endpoint(group, namespace), config_path, rdzv_id=group,
        local_addr=node_fqdn(f"{job}-$(RDTF_NODE_INDEX)", group, namespace),  # $(VAR): expanded by Kubernetes
        is_host=False, max_restarts=max_restarts, python=python, resume=resume)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "namespace": namespace, "labels": pod_labels(group, "worker")},
        "spec": {
            "completionMode": "Indexed",
            "completions": nnodes - 1,
            "parallelism": nnodes - 1,
            "backoffLimit": backoff_limit,  # a failed node fails the training (the head's torchrun notices too)
            "ttlSecondsAfterFinished": ttl_after_finished_s,
            "template": {
                "metadata": {"labels": pod_labels(group, "worker")},
                "spec": training_pod_spec(image, nnodes, gpus_per_node, group=group, role="worker", command=command,
                                          env=env, resources=resources),
            },
        },
    }


@dataclass(frozen=True)
class TrainingLaunch:
    """Everything one training needs: the Pipes head pod's arguments and the worker objects."""

    image: str
    nnodes: int
    gpus_per_node: int
    group: str
    namespace: str
    command: list[str]
    base_pod_spec: dict[str, Any]
    base_pod_meta: dict[str, Any]
    env: dict[str, str]
    service: dict[str, Any] | None
    worker_job: dict[str, Any] | None

    def pipes_run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``PipesK8sClient.run`` (add ``context=``)."""
        return {"image": self.image, "command": self.command, "namespace": self.namespace, "env": self.env,
                "base_pod_spec": self.base_pod_spec, "base_pod_meta": self.base_pod_meta}


def training_launch(
    image: str,
    nnodes: int,
    gpus_per_node: int,
    config_path: str,
    *,
    group: str,
    namespace: str,
    env: Mapping[str, str] | None = None,
    resources: PodResources = PodResources(),
    max_restarts: int = 3,
    python: str = "python",
    resume: str | None = "latest",
) -> TrainingLaunch:
    """The head pod (through Pipes) and, for ``nnodes > 1``, the rendezvous Service and the worker Job.

    ``env`` (default ``training_env`` for ``resources.lake_root``) gets ``RDTF_LAKE_ROOT`` / ``RDTF_SCRATCH`` if
    it lacks them; a ``RDTF_LAKE_ROOT`` that differs from ``resources.lake_root`` is refused, because the pods
    would then write the lake somewhere no volume or bucket is (the container's own, lost filesystem).
    """
    _check_group(group)
    env = dict(training_env(lake_root=resources.lake_root) if env is None else env)
    if env.setdefault("RDTF_LAKE_ROOT", resources.lake_root) != resources.lake_root:
        raise ValueError(f"env RDTF_LAKE_ROOT={env['RDTF_LAKE_ROOT']!r} but the pods' lake is "
                         f"PodResources(lake_root={resources.lake_root!r}): pass the same lake to both")
    env.setdefault("RDTF_SCRATCH", SCRATCH_MOUNT)  # the scratch emptyDir is in every training pod
    if nnodes == 1:
        env |= LOCAL_TORCHRUN_ENV  # with LOCAL_RDZV_ARGS: nothing of the pod's torchrun listens beyond loopback
        command = torchrun_command(1, gpus_per_node, None, config_path, max_restarts=max_restarts, python=python,
                                   resume=resume)
    else:
        command = torchrun_command(nnodes, gpus_per_node, rendezvous_endpoint(group, namespace), config_path,
                                   rdzv_id=group, local_addr=node_fqdn(head_hostname(group), group, namespace),
                                   is_host=True, max_restarts=max_restarts, python=python, resume=resume)
    return TrainingLaunch(
        image=image, nnodes=nnodes, gpus_per_node=gpus_per_node, group=group, namespace=namespace, command=command,
        base_pod_spec=training_pod_spec(image, nnodes, gpus_per_node, group=group, role="head", resources=resources),
        base_pod_meta={"labels": pod_labels(group, "head")},
        env=env,
        service=rendezvous_service_manifest(group, namespace) if nnodes > 1 else None,
        worker_job=worker_job_manifest(image, nnodes, gpus_per_node, config_path, group=group, namespace=namespace,
                                       env=env, resources=resources, max_restarts=max_restarts, python=python,
                                       resume=resume)
        if nnodes > 1 else None,
    )


# ----------------------------------------------------------------------------------------------- example


EXAMPLE_LAKE = "s3://rdtf-lake/lake"  # the bucket of the deploy/k8s examples
EXAMPLES = {"train-pod.yaml": EXAMPLE_LAKE, "train-pod-nfs.yaml": LAKE_MOUNT}  # file -> its lake root


def render_example(nnodes: int = 2, gpus_per_node: int = 8, namespace: str = "rdtf",
                   image: str = "registry.example.com/rdtf-stickers:latest", *,
                   lake_root: str = EXAMPLE_LAKE) -> list[dict[str, Any]]:
    """The objects of one ``nnodes`` x ``gpus_per_node`` training (``deploy/k8s/train-pod.yaml`` for the object-store
    lake, ``train-pod-nfs.yaml`` for a PVC at /lake): the rendezvous Service, the worker Job and the head Pod as
    ``PipesK8sClient`` creates it (before it adds the Pipes env)."""
    group = group_name("default", "0123abcd")
    resources = PodResources(lake_root=lake_root)
    launch = training_launch(image, nnodes, gpus_per_node, f"{lake_root.rstrip('/')}/training/default/train.json",
                             group=group, namespace=namespace, resources=resources,
                             env=training_env(lake_root=lake_root, mlflow_tracking_uri=None))
    head_spec = dict(launch.base_pod_spec)
    head_spec["containers"] = [{**head_spec["containers"][0], "command": launch.command,
                                "env": [{"name": k, "value": v} for k, v in launch.env.items()]}]
    head = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "dagster-<run id>-trained-model-<n>", "namespace": namespace, **launch.base_pod_meta},
            "spec": head_spec}
    return [d for d in (launch.service, launch.worker_job, head) if d is not None]


def render_example_file(name: str) -> str:
    """The text of ``deploy/k8s/<name>`` (one of ``EXAMPLES``), header included."""
    import yaml

    lake = EXAMPLES[name]
    header = (f"# Generated by `python -m pipelines.k8s {name} > deploy/k8s/{name}` (tests/pipelines/test_k8s.py checks it\n"
              f"# is current): one 2-node x 8-GPU training with the lake at {lake}. assets/training.py creates the\n"
              "# first two objects with pipelines.k8s_client.training_workers() and the head pod with PipesK8sClient.run(),\n"
              "# which names it and adds the Dagster Pipes environment. Not meant for `kubectl apply` as is (the pod name is\n"
              "# a placeholder).\n")
    return header + yaml.safe_dump_all(render_example(lake_root=lake), sort_keys=False, width=120)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pipelines.k8s [train-pod.yaml | train-pod-nfs.yaml]``: print that example file."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    name = args[0] if args else "train-pod.yaml"
    if name not in EXAMPLES:
        raise SystemExit(f"usage: python -m pipelines.k8s [{' | '.join(EXAMPLES)}]")
    sys.stdout.write(render_example_file(name))


if __name__ == "__main__":
    main()
