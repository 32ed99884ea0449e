"""Single-node ``torchrun`` whose stores and sockets listen on 127.0.0.1 only.

Why: ``torchrun --standalone`` hosts its rendezvous TCPStore and the workers' shared TCPStore on ALL
interfaces, whatever host name it is given (measured with torch 2.14: two listeners on ``::`` in the agent
process; ``TCPStore`` binds the wildcard address, its host argument is only used by clients). The stores are
unauthenticated: anyone who can reach the machine can read and write keys, join the rendezvous or stall the
job. A single-node training has no reason to be reachable from the network.

How (only documented torch knobs, checked by ``tests/training/test_launch.py`` with psutil while a training runs):

* agent: ``--rdzv-backend c10d --rdzv-conf store_type=file`` keeps the rendezvous in a private temp file
  (``mkstemp``, mode 0600) instead of a TCPStore, ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
  (:data:`LOCAL_TORCHRUN_ENV`) stops the agent from hosting a TCPStore for the workers, and ``--local-addr
  127.0.0.1`` becomes the workers' ``MASTER_ADDR``;
* workers: :func:`init_process_group` (``training.trainer``) hosts the workers' TCPStore on rank 0 through a socket
  it binds to that loopback ``MASTER_ADDR`` (``TCPStore(master_listen_fd=...)``), and points gloo/NCCL at the
  loopback interface (``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` — overriding e.g. a pod's ``eth0``, which
  is meant for multi-node runs) — gloo would otherwise listen on the address the host name resolves to.

Multi-node launches (``pipelines/k8s.py``, ``--rdzv-endpoint host:port``) must be reachable by the other
nodes and are left as they are; :func:`init_process_group` falls back to plain ``env://`` for them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

LOOPBACK = "127.0.0.1"
LOCAL_TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # agent: no shared TCPStore server on all interfaces
LOCAL_RDZV_ARGS = ("--rdzv-backend=c10d", "--rdzv-conf=store_type=file", "--rdzv-id=rdtf-local",
                   f"--local-addr={LOOPBACK}")  # rendezvous in a private file; workers' MASTER_ADDR = loopback
_LISTENERS: list[int] = []  # fds handed to the workers' TCPStore (kept open for the life of the process)


def local_torchrun_args(nproc_per_node: int) -> list[str]:
    """``torch.distributed.run`` options of a single-node launch bound to loopback (replaces ``--standalone``)."""
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be an int >= 1, got {nproc_per_node!r}")
    return ["--nnodes=1", f"--nproc_per_node={nproc_per_node}", *LOCAL_RDZV_ARGS]


def local_torchrun_command(nproc_per_node: int, script: list[str], python: str | None = None) -> list[str]:
    """``PY -m torch.distributed.run <loopback options> <script...>`` (run it with :data:`LOCAL_TORCHRUN_ENV`)."""
    return [python or sys.executable, "-m", "torch.distributed.run", *local_torchrun_args(nproc_per_node), *script]


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr == "localhost"


def _loopback_interface() -> str:
    return "lo0" if sys.platform == "darwin" else "lo"


def init_process_group(backend: str) -> None:
    """``dist.init_process_group(backend)`` for a torchrun worker; on a loopback ``MASTER_ADDR`` (the launch
    above) the store and the gloo/NCCL sockets listen on loopback only. Anything else: plain ``env://``."""
    import torch.distributed as dist
    from torch.distributed.constants import default_pg_timeout

    addr = os.environ.get("MASTER_ADDR", "")
    if not _is_loopback(addr) or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        dist.init_process_group(backend)  # multi-node, or an agent-hosted store (e.g. --standalone)
        return
    iface = _loopback_interface()  # forced: a pod's NCCL_SOCKET_IFNAME=eth0 is meant for multi-node runs
    os.environ["GLOO_SOCKET_IFNAME"] = iface
    os.environ["NCCL_SOCKET_IFNAME"] = iface
    rank, world, port = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["MASTER_PORT"])
    fd = None
    if rank == 0:
        host = "127.0.0.1" if addr == "localhost" else addr
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        fd = sock.detach()  # the store's server owns the fd now (Python must not close it under it)
        _LISTENERS.append(fd)
    store = dist.TCPStore(addr, port, world_size=world, is_master=rank == 0, timeout=default_pg_timeout,
                          master_listen_fd=fd)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world)
