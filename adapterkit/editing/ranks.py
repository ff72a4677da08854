"""The processes of a ``torchrun`` launch, for the statistics pass: the process group, each rank's share of the
corpus, and the sum of every rank's second moments.

``torchrun --nproc-per-node N -m adapterkit stats ...`` sets WORLD_SIZE, RANK and LOCAL_RANK; ``process_group``
starts torch.distributed from them (NCCL where the model runs on a GPU, gloo on the CPU). Each rank reads every
``world``-th document from its own offset, sums k k^T and the token count over them, and an all-reduce adds the
ranks' sums: the result is one process's sum over the same documents, in another order (float rounding).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import AdapterkitError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the launch (``world`` 1: a lone process, no group)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def leader(self) -> bool:
        """The rank that writes files and shows progress."""
        return self.rank == 0

    def share(self, items: Sequence) -> list:
        """This rank's documents: every ``world``-th from its own offset, so ranks get near-equal shares of any
        corpus and the split depends on nothing but the corpus and the world size."""
        return list(items[self.rank::self.world])

    def summed(self, sums: dict, count: int, widths: dict) -> tuple[dict, int]:
        """Every rank's ``sums`` ({module: [d, d] float64, or None where this rank saw no token}) and ``count``
        added together; ``widths`` gives each module's d for a rank that has no sum."""
        if self.world == 1:
            return sums, count
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        total = {}
        for module in sorted(sums):  # every rank reduces the modules in one order
            own = sums[module]
            if own is None and widths.get(module) is None:
                raise AdapterkitError(f"rank {self.rank} saw no token for {module} and cannot tell its width",
                                      fix="give each process at least one document, or run fewer processes")
            reduced = (own.to(device, torch.float64) if own is not None
                       else torch.zeros((widths[module],) * 2, dtype=torch.float64, device=device))
            dist.all_reduce(reduced)
            total[module] = reduced
        tokens = torch.tensor([count], dtype=torch.float64, device=device)
        dist.all_reduce(tokens)
        return total, int(tokens.item())

    def wait_for_all(self) -> None:
        """Every rank waits here until all have come (the leader's files are then written)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


ALONE = Ranks()


def launch_size() -> int:
    """WORLD_SIZE as torchrun set it (1 outside a launch)."""
    text = os.environ.get("WORLD_SIZE", "1")
    if not text.isdigit() or int(text) < 1:
        raise AdapterkitError(f"WORLD_SIZE={text!r} is not a process count", fix="launch with torchrun, which sets it")
    return int(text)


@contextlib.contextmanager
def process_group(on_gpu: bool):
    """The launch's ``Ranks`` with torch.distributed started (NCCL if ``on_gpu``, else gloo) and stopped after;
    ``ALONE`` outside a launch of several processes."""
    world = launch_size()
    if world == 1:
        yield ALONE
        return
    import torch.distributed as dist

    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise AdapterkitError(f"WORLD_SIZE={world}, but {', '.join(missing)} is not set",
                              fix="launch with `torchrun --nproc-per-node N -m adapterkit stats ...`, which sets them all")
    backend = "nccl" if on_gpu else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if on_gpu:
        torch.cuda.set_device(local_rank)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend)
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    except BaseException:
        if started:
            dist.destroy_process_group()
        raise
    if started:
        _leave_together()


def _leave_together() -> None:
    """Every rank tears the group down at the same point, and while the interpreter is whole: a rank whose gloo
    threads outlive its group's Python objects can abort at exit after its work is done."""
    import gc

    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    gc.collect()
