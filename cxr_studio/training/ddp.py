"""DistributedDataParallel plumbing: the same ``fit`` command under ``torchrun --nproc_per_node N``
trains on N processes (gloo on CPU, nccl on CUDA). Without torchrun's environment it is a no-op."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """What torchrun set (WORLD_SIZE, RANK, LOCAL_RANK), or a single process."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(ws, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(info: DistInfo, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_finite(value: torch.Tensor, info: DistInfo) -> bool:
    """True when ``value`` is finite on every process (so all ranks stop together on NaN)."""
    ok = torch.isfinite(value.detach()).all().to(torch.float32).reshape(1)
    if info.enabled and dist.is_initialized():
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() > 0)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
