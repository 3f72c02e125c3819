"""Wall time and the time budget of a training session.

`Budget` keeps the run's wall clock (carried across resumes), the optional `max_time`
budget of this session, and what steps, evals and samples have been measured to cost. From
those it decides when to stop so that the final eval still fits, how many eval windows fit
(an eval may take at most a tenth of the budget), whether per-eval samples can be afforded,
and the one-line estimate of the session's wall time shown before training gets going.
"""

from __future__ import annotations

import math
import time

EVAL_SHARE = 0.10  # most of the budget one eval may take
SAMPLE_SHARE = 0.05  # most of the budget one per-eval sample may take


class Budget:
    def __init__(
        self, max_time: float, wall_before: float = 0.0, budget_start: float = 0.0,
        world_size: int = 1,
    ):  # fmt: skip
        self.max_time = max_time
        self.world_size = world_size  # processes sharing each step's and each eval's windows
        self.wall_before = wall_before
        self.budget_start = budget_start  # the run's wall seconds when this budget began
        self._t0 = time.perf_counter()
        self.step_seconds, self.steps_timed = 0.0, 0
        self.eval_rate: float | None = None  # seconds per eval window (both splits counted)
        self.eval_windows = 0  # windows per split of the run's full evals
        self.eval_cost = 0.0  # seconds a full eval takes, as measured
        self.sample_cost = 0.0
        self.no_samples = False
        self.told_shrunk = False
        self._estimated = False

    # -- clocks --------------------------------------------------------------------------
    def wall(self) -> float:
        """Wall seconds of the whole run so far (all sessions)."""
        return self.wall_before + time.perf_counter() - self._t0

    def used(self) -> float:
        """Seconds of the budget used so far."""
        return self.wall() - self.budget_start

    def sec_per_step(self) -> float:
        return self.step_seconds / self.steps_timed if self.steps_timed else 0.0

    # -- measurements ----------------------------------------------------------------------
    def step_took(self, seconds: float) -> None:
        self.step_seconds += seconds
        self.steps_timed += 1

    def eval_took(self, seconds: float, windows: float) -> None:
        """An eval (or the probe) scored `windows` per split in `seconds`."""
        self.eval_rate = seconds / max(1, 2 * windows)
        self.eval_cost = self.eval_rate * 2 * max(windows, self.eval_windows)

    def sample_took(self, seconds: float) -> bool:
        """Record a per-eval sample's cost; True the first time samples become unaffordable."""
        self.sample_cost = seconds
        if self.max_time and seconds > SAMPLE_SHARE * self.max_time and not self.no_samples:
            self.no_samples = True
            return True
        return False

    # -- decisions ---------------------------------------------------------------------------
    def progress(self, step: int, cfg, used: float | None = None) -> float:
        """How far through the post-warmup schedule the run is, by steps or by the budget
        (`used`: the budget seconds to go by, when the caller has agreed one across ranks)."""
        by_steps = (step - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters)
        if not cfg.iters:
            by_steps = 0.0
        if self.max_time:
            return max(by_steps, (self.used() if used is None else used) / self.max_time)
        return by_steps

    def _final_cost(self) -> float:
        return self.eval_cost + (0.0 if self.no_samples else self.sample_cost)

    def must_stop(self) -> bool:
        """True once one more step and the final eval would not fit in the budget."""
        if not self.max_time:
            return False
        return self.used() + self.sec_per_step() + self._final_cost() >= self.max_time

    def last_eval_is_now(self) -> bool:
        """An eval is due: would no step and final eval fit after it? Then it is the final
        one (no second eval a step later)."""
        if not self.max_time or not self.steps_timed:
            return False
        after = self.used() + self._final_cost()
        return after + self.sec_per_step() + self._final_cost() >= self.max_time

    def affordable_windows(self, planned: int, minimum: int) -> int:
        """How many of the planned windows per split an eval may score within the budget."""
        if not self.max_time or not self.eval_rate:
            return planned
        fits = int(EVAL_SHARE * self.max_time / (2 * self.eval_rate))
        return max(min(planned, fits), min(planned, minimum))

    def sample_allowed(self, final: bool) -> bool:
        return not self.no_samples

    def estimate_due(self, steps_this_session: int) -> bool:
        if self._estimated or not steps_this_session:
            return False
        if self.step_seconds >= 2.0 and steps_this_session >= 5 or steps_this_session >= 200:
            self._estimated = True
            return True
        return False

    def estimate(self, step: int, cfg) -> tuple[float, int, float, float]:
        """(seconds left in this session, steps left, seconds per step, seconds per eval),
        the final eval included. Before any eval was timed (a resume far from its next one),
        an eval window is taken to cost a third of a training window (forward only); the
        processes share an eval's windows as they share a step's."""
        sps = self.sec_per_step() or 1e-9
        per_eval = self._final_cost()
        if not per_eval and self.eval_windows:
            step_windows = max(1, cfg.batch_size) * self.world_size
            per_eval = 2 * self.eval_windows * sps / step_windows / 3
        if self.max_time:
            left = max(0.0, self.max_time - self.used())
            steps = int(left / (sps + per_eval / cfg.eval_interval))
            if cfg.iters:
                steps = min(steps, cfg.iters - step)
                left = min(left, steps * sps + math.ceil(steps / cfg.eval_interval) * per_eval)
            return left, steps, sps, per_eval
        steps = cfg.iters - step
        evals = (cfg.iters // cfg.eval_interval - step // cfg.eval_interval) + (
            cfg.iters % cfg.eval_interval != 0
        )
        return steps * sps + evals * per_eval, steps, sps, per_eval
