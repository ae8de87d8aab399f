"""Data-parallel training with torch.distributed: the same ``train`` under ``torchrun``.

``gqnbench train ...`` started by ``torchrun --nproc_per_node=N`` finds ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment, joins the process group (gloo on
CPU, nccl on CUDA, one GPU per local rank) and wraps the model in
``DistributedDataParallel``. Rank k trains on the k-th contiguous slice of each global
batch (``EpisodeSampler.batch(step, k, N)``), so N ranks see exactly the scenes one rank
would with the same global batch, and DDP's gradient average equals the gradient of the
global-batch mean loss. Scalars (losses, validation sums, divergence) are reduced across
ranks; only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gqnbench.step import resolve_device as _resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not distributed

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()
_ACTIVE: DistContext | None = None  # the group init_distributed joined in this process, until shutdown


def active_context() -> DistContext:
    """The context :func:`init_distributed` joined in this process, else :data:`SINGLE`.

    ``train`` uses it when no ``dist_ctx`` is passed, so code that calls ``train`` without
    knowing about DDP (a sweep's run inside a multi-GPU cluster job) trains on every rank.
    """
    return _ACTIVE or SINGLE


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(preference: str, ctx: DistContext = SINGLE) -> torch.device:
    """``auto`` -> this rank's GPU if CUDA is available, else the CPU (see :func:`gqnbench.step.resolve_device`)."""
    return _resolve_device(preference, local_rank=ctx.local_rank)


def init_distributed(device_preference: str = "auto", init_method: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment; a no-op for one process."""
    global _ACTIVE
    world = env_world_size()
    if world <= 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    wants_cuda = device_preference.startswith("cuda") or (device_preference == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method=init_method or "env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=30),
        )
    _ACTIVE = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend)
    return _ACTIVE


def shutdown(ctx: DistContext) -> None:
    global _ACTIVE
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
    if ctx == _ACTIVE:
        _ACTIVE = None


def all_reduce_sum(values: Sequence[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum a few float64 scalars over ranks (identity for one process)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj`` on every rank (used for per-rank RNG states in checkpoints)."""
    if not ctx.enabled:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap_ddp(
    module: torch.nn.Module, ctx: DistContext, device: torch.device, has_unused_parameters: bool = False
) -> torch.nn.Module:
    """DDP around the training objective; rank 0's initial weights are broadcast to all ranks.

    ``has_unused_parameters``: some parameters get no gradient from the loss (e.g. GQN with a
    tower representation never uses its r upsampler); DDP must then look for them every step.
    """
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=has_unused_parameters)
