"""Several processes training one model (``torchrun``): ranks, the process group, and agreeing on decisions.

``torchrun --nproc_per_node N -m biounet train ...`` starts N copies of ``biounet train`` with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (``--nnodes`` and a rendezvous endpoint spread them
over machines). Each process trains the same model under DistributedDataParallel, which averages the
gradients. Everything that is decided rather than computed (the plan, whether the budget allows another
step, whether to validate, the validation scores) is decided by rank 0 and broadcast, so that no rank can
stop while another waits for it. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from biounet.errors import BiounetError

# Rank 0 validates, tunes and writes while the others wait; a long validation must not time them out.
TIMEOUT = datetime.timedelta(hours=4)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one training run.

    Attributes:
        rank: 0..world-1 over all machines; rank 0 decides and writes.
        world: number of processes.
        local_rank: the index on this machine (its GPU, on a GPU machine).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable value); the value itself in a single process."""
        if not self.distributed:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank, cheaply (one small tensor): for per-step decisions."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def all(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (e.g. a finite loss: one rank's NaN stops them all)."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return bool(tensor.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def environment_ranks() -> Ranks:
    """The ranks ``torchrun`` put in the environment; a single process without them.

    Raises:
        BiounetError: for values that are not integers or do not fit together.
    """
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise BiounetError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc})") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise BiounetError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return Ranks(rank, world, local)


def start(device: torch.device) -> tuple[Ranks, torch.device]:
    """Joins the process group when started by ``torchrun``: NCCL on CUDA, gloo on the CPU.

    Args:
        device: the device asked for; ``cuda`` becomes ``cuda:LOCAL_RANK``, one GPU per process.

    Returns:
        The ranks and this process's device.
    """
    ranks = environment_ranks()
    if not ranks.distributed:
        return ranks, device
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise BiounetError(f"LOCAL_RANK {ranks.local_rank} has no GPU: this machine has "
                               f"{torch.cuda.device_count()}; start at most that many processes per node")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return ranks, device


def stop() -> None:
    """Leaves the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    backend = dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
