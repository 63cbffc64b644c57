"""torch.distributed set-up from the environment that ``torchrun`` provides.

``torchrun --nproc_per_node=N [--nnodes ... --rdzv_endpoint ...] -m flowspeech.cli.main train
...`` sets RANK, WORLD_SIZE, LOCAL_RANK (and the rendezvous); a plain run is world size 1.
NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def all_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True only if ``flag`` is true on every rank (so all ranks take the same branch)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo, finished: bool = True) -> None:
    """Destroy the process group; after a finished run, on every rank together.

    Call it after the DDP wrappers are released: they hold the group, and a gloo group that
    outlives ``destroy_process_group`` into interpreter shutdown can abort the process
    ("terminate called without an active exception") after training has finished. After an
    error the other ranks may be inside a collective, so no barrier is attempted then."""
    if not (info.enabled and dist.is_initialized()):
        return

    gc.collect()
    if finished:
        dist.barrier()  # no rank tears down its end while another still talks to it
    dist.destroy_process_group()
