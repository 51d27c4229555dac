"""The "SingleExp" schedule of SGD-GMM (spec §3).

It shrinks the learning rate and the annealing radius together each time the running-mean
objective stops improving.

It is a pure state machine over window averages, so the trainer can accumulate losses on the
device and talk to it once per window (one host sync every ``window`` steps).
"""

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["EVERY_WINDOW_TOL", "AnnealingConfig", "SingleExpSchedule"]

# Under the "every_window" rule, a window at the radius floor is stationary when its mean moved
# by less than this fraction of the objective's size (the estimator's tol:
# dcgmm.interfaces.sklearn_api).
EVERY_WINDOW_TOL = 1e-3


@dataclass(frozen=True, kw_only=True)
class AnnealingConfig:
    """Parameters of the SingleExp schedule; defaults are the authors' recipes."""

    lr_start: float = 0.011
    lr_floor: float = 0.01
    sigma_floor: float = 0.01
    window: int = 100
    delta: float = 0.05
    gamma: float = 0.9
    rule: Literal["stationary", "every_window"] = "stationary"

    def __post_init__(self) -> None:
        if self.rule not in ("stationary", "every_window"):
            raise ValueError(f"rule must be 'stationary' or 'every_window'; got {self.rule!r}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must be in (0, 1); got {self.gamma}")
        if self.window <= 0:
            raise ValueError(f"window must be a positive number of steps; got {self.window}")
        if not 0 < self.lr_floor <= self.lr_start:
            raise ValueError(
                f"need 0 < lr_floor <= lr_start; got lr_floor={self.lr_floor}, "
                f"lr_start={self.lr_start}"
            )


@dataclass(kw_only=True)
class SingleExpSchedule:
    r"""Learning rate and annealing radius of one GMM layer.

    Window 1's mean objective sets the baseline :math:`l_0`, window 2 sets ``last``; from
    window 3 on, with :math:`r = (\bar l - last) / (last - l_0)`, both values shrink by
    ``gamma`` (down to their floors) whenever :math:`-2\delta < r < \delta`; then
    ``last`` becomes the window's mean. The objective is a log-likelihood (it rises).
    If ``last == l_0`` the objective has not moved at all, which counts as stationary.

    ``rule="every_window"`` (stepwise EM, ``TrainConfig(solver="em")``) shrinks them in every
    window from the third: EM reaches the fixed point of a radius within a window, so its
    first window already holds nearly all its progress and :math:`r` above would be noise.
    There a window is stationary when its mean moved by less than ``EVERY_WINDOW_TOL`` of
    :math:`\max(|last|, 1)`, which is what stopping once annealed reads at the floor.
    """

    config: AnnealingConfig
    lr: float
    sigma: float
    baseline: float | None = None
    last: float | None = None
    n_windows: int = 0
    n_reductions: int = 0

    @classmethod
    def start(cls, config: AnnealingConfig, sigma_start: float) -> "SingleExpSchedule":
        """Return a fresh schedule at ``lr_start`` and ``sigma_start``."""
        return cls(config=config, lr=config.lr_start, sigma=sigma_start)

    def end_window(self, mean_objective: float) -> bool:
        """Feed one window's mean objective; return whether it was stationary.

        Under the ``"stationary"`` rule, lr and sigma were reduced exactly when it was.
        """
        self.n_windows += 1
        if self.baseline is None:
            self.baseline = mean_objective
            return False
        if self.last is None:
            self.last = mean_objective
            return False
        cfg = self.config
        progress = self.last - self.baseline
        change = mean_objective - self.last
        if cfg.rule == "every_window":
            stationary = abs(change) < EVERY_WINDOW_TOL * max(abs(self.last), 1.0)
        else:
            stationary = progress == 0 or -2 * cfg.delta < change / progress < cfg.delta
        self.last = mean_objective
        if not stationary and cfg.rule == "stationary":
            return False
        self.lr = max(self.lr * cfg.gamma, cfg.lr_floor)
        self.sigma = max(self.sigma * cfg.gamma, cfg.sigma_floor)
        self.n_reductions += 1
        return stationary

    def state_dict(self) -> dict[str, float | int | None]:
        """Return the mutable state (floats round-trip exactly through JSON)."""
        state = asdict(self)
        del state["config"]
        return state

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            setattr(self, key, value)
