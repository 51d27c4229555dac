"""The order in which a run visits its training images: one shuffle per epoch, per block.

Each epoch's order is a function of (seed, epoch) alone (and the block, with
``TrainConfig.data_shards``), so a resumed run sees exactly the batches an uninterrupted one
would, and a block's order does not depend on which process holds it.
"""

import numpy as np
import torch
from torch import Tensor

__all__ = ["epoch_order", "epoch_permutation"]


def epoch_permutation(
    n: int, seed: int, epoch: int, device: torch.device, block: int | None = None
) -> Tensor:
    """Return the sample order of one epoch (of one block of ``data_shards``, if given).

    It is a function of (seed, epoch, block) alone, so a resumed run sees exactly the batches
    an uninterrupted one would, and a block's order does not depend on who holds it.
    """
    entropy = [seed, epoch] if block is None else [seed, epoch, block]
    derived = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator().manual_seed(derived & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(n, generator=generator).to(device)


def epoch_order(
    n: int, seed: int, epoch: int, device: torch.device, *, shards: int = 1,
    only_block: int | None = None,
) -> Tensor:  # fmt: skip
    """Return an epoch's order of ``n`` images: (n,), or (blocks, n // shards) of rows.

    With ``shards`` > 1 the images are ``shards`` contiguous blocks of ``n // shards``, each
    shuffled on its own; ``only_block`` says that the ``n`` images are that one block (a
    process of a data-parallel job) and returns its order as one row.
    """
    if shards == 1:
        return epoch_permutation(n, seed, epoch, device)
    if only_block is not None:
        return epoch_permutation(n, seed, epoch, device, block=only_block)[None]
    size = n // shards
    return torch.stack([
        s * size + epoch_permutation(size, seed, epoch, device, block=s) for s in range(shards)
    ])  # fmt: skip
