"""Training a DCGMM: the trainer and its config, annealing, checkpoints, the watchdog.

- :mod:`~dcgmm.training.trainer`: the :class:`~dcgmm.training.trainer.Trainer` (one step,
  the loop, early stops);
- :mod:`~dcgmm.training.config`: :class:`~dcgmm.training.config.TrainConfig` and the presets'
  training settings;
- :mod:`~dcgmm.training.annealing`: the SingleExp schedule of the torus radius;
- :mod:`~dcgmm.training.records`: window sums and annealing state;
- :mod:`~dcgmm.training.metrics`: the typed records of ``metrics.jsonl`` (and the callback's);
- :mod:`~dcgmm.training.state`: a trainer's checkpoints, resuming, rollback;
- :mod:`~dcgmm.training.checkpoint`: a DCGMM's run directory (save and load);
- :mod:`~dcgmm.training.batch_order`, :mod:`~dcgmm.training.watchdog`,
  :mod:`~dcgmm.training.distributed`, :mod:`~dcgmm.training.monitoring`.

It may import the core (model, stages, layers), :mod:`dcgmm.io` and
:mod:`dcgmm.evaluation` (for plots); never :mod:`dcgmm.interfaces` or the CLI.
"""

__all__: list[str] = []
