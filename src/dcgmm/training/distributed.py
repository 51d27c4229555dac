"""Data-parallel training with ``torch.distributed``, started by ``torchrun``.

DDP semantics without wrapping the model (a DCGMM has one objective per layer, not one loss):
every rank takes its equal share of each global mini-batch, computes its layers' gradients,
and the gradients are averaged over ranks with one all-reduce per step, so every rank applies
the same update. The annealing decisions use the window losses averaged over ranks, so they
are identical everywhere. Backends: gloo on CPU, NCCL on CUDA.

Single-process runs never touch ``torch.distributed``.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistContext", "init_from_env", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly one-process) data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints progress."""
        return self.rank == 0

    def shard(self, index: Tensor) -> Tensor:
        """Return this rank's contiguous share of a global batch's sample indices."""
        if not self.active:
            return index
        size = index.shape[0] // self.world_size
        return index[self.rank * size : (self.rank + 1) * size]

    def check_batch_size(self, batch_size: int) -> None:
        """Raise a ``ValueError`` unless every rank gets an equal share of a batch."""
        if batch_size % self.world_size:
            raise ValueError(
                f"the global batch size {batch_size} must be divisible by the number of "
                f"processes {self.world_size}, so that every rank gets an equal share"
            )

    def mean_(self, tensors: list[Tensor]) -> None:
        """Average tensors over ranks in place, with one collective call (no-op alone)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def mean_gradients_(self, module: nn.Module, extra: Sequence[Tensor] = ()) -> None:
        """Average over ranks the ``.grad`` of every parameter that has one, and ``extra``.

        ``extra`` rides along in the same collective call (the trainer's finiteness flags).
        """
        self.mean_([*(p.grad for p in module.parameters() if p.grad is not None), *extra])

    def broadcast_(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (as DDP does at start)."""
        if not self.active:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def broadcast_tensor_(self, tensor: Tensor) -> None:
        """Copy rank 0's ``tensor`` to every rank, in place (no-op alone)."""
        if self.active:
            dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        """Wait for all ranks (no-op alone)."""
        if self.active:
            dist.barrier()


def init_from_env(device: str) -> tuple[DistContext, str]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns the context and the device this rank should use (``cuda:LOCAL_RANK`` for a CUDA
    job). Without ``WORLD_SIZE`` > 1 in the environment it returns a one-process context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        _bind_default_arguments_before_the_group_exists()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank), device


def _bind_default_arguments_before_the_group_exists() -> None:
    """Import ``torch.distributed.nn.functional`` while there is no process group yet.

    That module binds ``group=group.WORLD`` as the default argument of ten functions when it
    is imported. Imported after ``init_process_group`` (``torch._dynamo`` imports it, and the
    first ``torch.optim`` optimizer imports ``torch._dynamo``), those defaults hold the
    group, so ``destroy_process_group`` cannot free it: gloo's worker and TCP-loop threads
    live on until the interpreter tears the module down at exit, and a gloo thread that
    then waits for the GIL is ended by the finalising interpreter (``pthread_exit`` unwinding
    through a ``noexcept`` frame): "terminate called without an active exception" and a
    SIGABRT, now and then, after all work was done. Imported first, the defaults are
    ``None``. ``tests/test_distributed.py`` checks that no gloo thread outlives
    :func:`shutdown`.
    """
    import torch.distributed.nn.functional  # noqa: F401


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
