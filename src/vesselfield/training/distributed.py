"""Several processes (GPUs, nodes) through PyTorch's DistributedDataParallel, launched by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and tells each,
through its environment, who it is: ``WORLD_SIZE`` (processes in all), ``RANK`` (this one,
0 .. WORLD_SIZE - 1), ``LOCAL_RANK`` (this one on its node: its GPU) and the rendezvous address
(``MASTER_ADDR``, ``MASTER_PORT``). This module reads that environment, starts the process
group (NCCL on CUDA, Gloo on the CPU) and offers the few collective operations the trainer
needs. Without ``torchrun`` (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything here is a no-op
for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vesselfield.errors import VesselfieldError

__all__ = ["DistributedContext", "torchrun_environment"]


def torchrun_environment() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from torchrun's environment; ``(1, 0, 0)`` without it.

    Raises:
        VesselfieldError: the variables are not integers or are inconsistent.
    """
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
    try:
        world, rank, local = (int(os.environ.get(n, d)) for n, d in zip(names, ("1", "0", "0")))
    except ValueError:
        raise VesselfieldError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise VesselfieldError(f"inconsistent torchrun environment: WORLD_SIZE={world} RANK={rank} "
                               f"LOCAL_RANK={local}")
    return world, rank, local


@dataclass
class DistributedContext:
    """This process's place in a distributed run, and the collectives the trainer uses.

    Attributes:
        world_size: processes in the run (1: no distribution).
        rank: this process, 0 .. world_size - 1; rank 0 writes the files.
        local_rank: this process on its node (its CUDA device).
        device: the device the collectives' tensors live on (CUDA for NCCL, CPU for Gloo).
        started_here: this context started the process group (and so ends it in :meth:`stop`).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: object = None
    started_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, device) -> "DistributedContext":
        """Join the process group of a torchrun launch (or the one the caller already started).

        Args:
            device: this process's ``torch.device``; CUDA selects the NCCL backend, the CPU Gloo.
        """
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            _, _, local = torchrun_environment()
            return cls(dist.get_world_size(), dist.get_rank(), local, device, False)
        world, rank, local = torchrun_environment()
        if world == 1:
            return cls(1, 0, 0, device, False)
        if not dist.is_available():
            raise VesselfieldError("WORLD_SIZE > 1 but this torch was built without torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # env:// rendezvous: torchrun has set MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK.
        dist.init_process_group(backend=backend)
        return cls(world, rank, local, device, True)

    def stop(self) -> None:
        """End the process group if this context started it."""
        import torch.distributed as dist

        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def sum_values(self, sums: dict) -> dict:
        """``{name: (sum, weight)}`` summed over the processes (names missing on a process count 0)."""
        if not self.enabled:
            return {k: (float(s), float(w)) for k, (s, w) in sums.items()}
        import torch
        import torch.distributed as dist

        # Rank 0's names in its order, then names only other processes have (every process the same list).
        gathered = self.gather(list(sums))
        names = list(gathered[0]) + sorted(set().union(*gathered[1:]) - set(gathered[0]))
        if not names:
            return {}
        local = [[float(sums[k][0]), float(sums[k][1])] if k in sums else [0.0, 0.0] for k in names]
        tensor = torch.tensor(local, dtype=torch.float64, device=self.device).reshape(len(names), 2)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return {k: (float(s), float(w)) for k, (s, w) in zip(names, tensor.cpu().tolist())}

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every process (e.g. its clock, so that every process logs one time)."""
        if not self.enabled:
            return float(value)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def share(self, value):
        """Rank 0's ``value`` (a small picklable object, e.g. a dict of floats) on every process.

        Every process must call it; what the others pass is ignored.
        """
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def decide(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every process (rank 0 decides, e.g. whether the time limit is reached)."""
        return self.from_main(1.0 if flag else 0.0) > 0.5

    def gather(self, value) -> list:
        """``[value of rank 0, value of rank 1, ...]`` on every process (small picklable values)."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out
