"""One job on several processes, data-parallel: launched by ``torchrun --nproc-per-node=N`` or
as a Slurm job of N tasks (``hydra.launcher.tasks_per_node=N``).

Every process trains: the Trainer shares each global batch out among them (gloo on CPUs, NCCL
on GPUs). The first process alone measures the untuned model, talks to MLflow and writes the
run's files; the others train alongside it (:func:`peftlab.pipeline.train_alongside`).
"""

from __future__ import annotations

import os
from typing import Any


def join_slurm_job() -> None:
    """In a Slurm job of several tasks, torch.distributed's variables (RANK, WORLD_SIZE,
    MASTER_ADDR...) from Slurm's; torchrun sets them itself."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_first() -> bool:
    """Whether this process logs and writes (every process of a job on one)."""
    return int(os.environ.get("RANK", "0")) == 0


def shared(value: Any = None) -> Any:
    """``value`` as the first process has it, in every process (each calls this at the same
    point): what the first decided alone, such as the checkpoint to resume from."""
    if world_size() == 1:
        return value
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():  # accelerate takes this group over when the Trainer starts
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def anyone(flag: bool) -> bool:
    """Whether ``flag`` holds in any process (each calls this at the same point)."""
    if world_size() == 1:
        return flag
    import torch
    import torch.distributed as dist

    found = torch.tensor([int(flag)])
    if dist.get_backend() == "nccl":
        found = found.cuda()
    dist.all_reduce(found, op=dist.ReduceOp.MAX)
    return bool(found.item())
