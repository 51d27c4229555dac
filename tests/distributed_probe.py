"""Run under torchrun by test_distributed: join, train a step's worth, leave, list threads.

Each rank writes ``OUT_DIR/rank<R>.json``: the names of its native threads after
:func:`dcgmm.training.distributed.shutdown` (Linux: /proc/self/task/*/comm). Usage:
``torchrun ... -m tests.distributed_probe OUT_DIR``.
"""

import json
import os
import sys
from pathlib import Path

import torch

from dcgmm.training.distributed import init_from_env, shutdown


def native_threads() -> list[str]:
    tasks = sorted(os.listdir("/proc/self/task"))
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]


if __name__ == "__main__":
    ctx, _ = init_from_env("cpu")
    weight = torch.nn.Parameter(torch.ones(3))
    # The first optimizer imports torch._dynamo, which imports torch.distributed.nn.functional:
    # the import that used to keep the process group alive past destroy_process_group.
    optimizer = torch.optim.SGD([weight], lr=0.1)
    weight.sum().backward()
    ctx.mean_gradients_(torch.nn.ParameterList([weight]))
    optimizer.step()
    shutdown()
    report = {"rank": ctx.rank, "threads": native_threads()}
    (Path(sys.argv[1]) / f"rank{ctx.rank}.json").write_text(json.dumps(report))
