"""Difficulty-adaptive curriculum learning (DCL) of RDTF (arXiv 2503.17735, Eq. 2-4, Appendix Algorithm 1).

Each training step draws, per sample, a difficulty level (task, n_masked) from ``model.masks.difficulty_levels``
(IPT/PDT/GRT x masked frame length N); ``model.masks.sample_condition`` turns it into a condition mask
(Table 7). The level distribution balances two components (Algorithm 1, lines 6-11 and 14):

* Static component f_s(t) (Eq. 2): task probabilities with P_IPT non-increasing and P_PDT, P_GRT
  non-decreasing in t. Here: piecewise linear in progress u = step / total_steps through the configured
  ``start`` (u = 0), ``mid`` (u = mid_at) and ``end`` (u = 1) points, which are validated against Eq. 2 and
  must each sum to 1. Within a task the static part spreads the task probability uniformly over its levels.
* Adaptive component (Eq. 3-4). Eq. 3, L_s(t) = L_c(t) - int_0^t L_c, is read as "current loss minus the
  historical loss level": the integral is the mean of a bounded window (``window`` steps, excluding the
  current one) of past losses, since an unnormalised growing integral has the scale t x loss. L_c is the
  EMA-smoothed loss (``ema``), because single diffusion losses are dominated by the random timestep. L_s
  is divided by that history mean (relative error), so the PID gains of Table 6 (Kp 5.0, Ki 3.0, Kd 1.3)
  are independent of the loss scale. Eq. 4 in discrete time (dt = 1 step):
      P* = Kp L_s(t) + Ki I(t) + Kd (L_s(t) - L_s(t-1)),   I(t) = clip(I(t-1) + L_s(t), +-integral_limit)
  (clamping is the anti-windup; L_s(-1) := L_s(0), L_s = 0 while there is no history yet).
* Adaptive map m_ad (Algorithm 1, line 11). The paper only says P* "lets the model dynamically select the
  task level" (docs/curriculum.md discusses the ambiguity). Levels are ranked on [0, 1] by their position in
  the easiest-to-hardest list (rank_i = i / (n_levels - 1)). Loss above its history (P* > 0) -> easier
  samples; below (P* < 0) -> harder ones: the "damping" the paper attributes to the adaptive component.
  Two maps (``adaptive_map``):
  - TILT (default): the adaptive distribution is the static one tilted by the controller,
    p_i ∝ static_i exp(-tilt_beta u c_i), c_i = 2 rank_i - 1 in [-1, 1], u = clip(P*, +-p_star_limit).
    u = 0 returns the static (LCL) distribution exactly, so DCL is "LCL plus feedback" and the Table 4
    LCL/DCL comparison is not confounded by a different task mix.
  - GAUSSIAN (legacy, behaviour unchanged): target d* = clip(d_ref - beta P*, 0, 1), d_ref = the expected
    rank under the static level distribution, adaptive probabilities ∝ exp(-(rank - d*)^2 / (2 sigma^2)).
    Even at P* = 0 this reshapes the mix (end of training (IPT, PDT, GRT) = (0.31, 0.47, 0.22) vs LCL's
    (0.2, 0.4, 0.4)): the Gaussian around the *mean* rank under-weights the hard tail (GRT).
* Controllers (``controller``; default: DAMPED for TILT, PID for GAUSSIAN):
  - PID: Eq. 4 as above (clamped running *sum* of L_s). Under a steady noisy loss L_s is zero-mean noise
    whose sum drifts to the clamp, so with the Gaussian map d* wanders (std 0.35 of its range) and sits at
    0 or 1 for ~20 % of a run (simulated, loss cv 0.3: test_wander_under_steady_noisy_loss_old_vs_new).
  - DAMPED: the same three terms on e = L_s soft-thresholded by ``deadband``, with Eq. 4's integral read,
    like Eq. 3's, as a *mean*: I(t) = rho I(t-1) + (1 - rho) e(t), rho = 1 - 1 / window (leaky, so it
    reverts to 0 when the loss is steady), still clamped to +-integral_limit.
* Balance (Algorithm 1, line 14): level probs = (1 - alpha) static + alpha adaptive (both maps).

Modes (Table 4 ablation): NONE (w/o CL: uniform over tasks, uniform over levels within a task, constant),
LINEAR (LCL: static only, losses ignored), ADAPTIVE (DCL: static + adaptive). Every mode tracks the
controller state, so ``stats`` can be compared across runs, but only ADAPTIVE uses it.

Distributed training: call ``update`` once per optimizer step with the loss already averaged across ranks;
the state then evolves identically on every rank, so all ranks draw from the same distribution.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from model.masks import Difficulty, Task, difficulty_levels

__all__ = ["AdaptiveMap", "Controller", "Curriculum", "CurriculumConfig", "CurriculumMode", "damped_step",
           "gaussian_probs", "pid_step", "tilt_probs"]

_STATE_VERSION = 2  # 2 adds "controller" (the kind that produced "integral"); version 1 states still load
_TASKS = (Task.INTERPOLATION, Task.PREDICTION, Task.GENERATION)
_TOL = 1e-6  # tolerance on "sums to 1" and on the Eq. 2 monotonicity of the configured points


class CurriculumMode(StrEnum):
    NONE = "none"  # w/o CL: uniform tasks and levels, constant
    LINEAR = "linear"  # LCL: static component only
    ADAPTIVE = "adaptive"  # DCL: static + adaptive components


class AdaptiveMap(StrEnum):
    """m_ad of Algorithm 1 line 11: how P* turns into adaptive level probabilities."""

    TILT = "tilt"  # static distribution tilted by exp(-tilt_beta u c_i): u = 0 is exactly LCL
    GAUSSIAN = "gaussian"  # legacy: Gaussian over ranks around d* = d_ref - beta P* (reshapes the mix at P* = 0)


class Controller(StrEnum):
    """How L_s (Eq. 3) becomes P* (Eq. 4)."""

    PID = "pid"  # Eq. 4 literally: clamped running sum as the integral
    DAMPED = "damped"  # dead-banded error, leaky-mean integral: reverts to 0 under a steady loss


@dataclass(frozen=True)
class CurriculumConfig:
    mode: CurriculumMode = CurriculumMode.ADAPTIVE  # Table 4 ablation switch
    total_steps: int = 50_000  # step at which the static schedule reaches ``end`` (Table 6: 50K)
    start: tuple[float, float, float] = (0.6, 0.3, 0.1)  # static (IPT, PDT, GRT) probabilities at step 0
    mid: tuple[float, float, float] = (0.34, 0.33, 0.33)  # static probabilities at progress mid_at
    mid_at: float = 0.5  # progress fraction (0, 1) of the ``mid`` point
    end: tuple[float, float, float] = (0.2, 0.4, 0.4)  # static probabilities from total_steps on
    kp: float = 5.0  # proportional gain (Table 6)
    ki: float = 3.0  # integral gain (Table 6)
    kd: float = 1.3  # derivative gain (Table 6)
    ema: float = 0.9  # EMA factor smoothing the raw loss before Eq. 3
    window: int = 100  # steps of smoothed-loss history whose mean is Eq. 3's historical loss (and damped integral's horizon)
    integral_limit: float = 0.5  # anti-windup clamp on the integral of L_s (5.0 pinned d* at 0 or 1 for 79 % of a simulated run; 0.5: 19 %)
    beta: float = 0.25  # gaussian map: shift of the target rank d* per unit of P*
    sigma: float = 0.15  # gaussian map: width (in normalised rank) of the adaptive Gaussian over levels
    alpha: float = 0.5  # weight of the adaptive component in the balance (Algorithm 1 line 14)
    k_max: int = 8  # frames per sample the levels are built for (model.masks.difficulty_levels)
    adaptive_map: AdaptiveMap = AdaptiveMap.TILT  # m_ad (Algorithm 1 line 11): tilt (default) | gaussian (legacy)
    controller: Controller | None = None  # pid | damped; None: damped for the tilt map, pid for the gaussian map
    tilt_beta: float = 1.0  # tilt map: log-odds shift between the easiest and the hardest level is 2 tilt_beta u
    p_star_limit: float = 2.0  # tilt map: clamp of |P*| (2.0 with tilt_beta 1: about the gaussian map's reach)
    deadband: float = 0.05  # damped controller: |L_s| (relative loss change) below this is treated as noise

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"CurriculumConfig.{name} {why}, got {getattr(self, name)!r}")

        for name, enum in (("mode", CurriculumMode), ("adaptive_map", AdaptiveMap), ("controller", Controller)):
            if name == "controller" and self.controller is None:
                continue
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                raise bad(name, f"must be one of {[m.value for m in enum]}"
                          + (" or None" if name == "controller" else "")) from None
        for name, lowest in (("total_steps", 1), ("window", 1), ("k_max", 3)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lowest:
                raise bad(name, f"must be an int >= {lowest}")
            object.__setattr__(self, name, int(v))
        for name in ("start", "mid", "end"):
            v = getattr(self, name)
            try:
                point = tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise bad(name, "must be three probabilities (IPT, PDT, GRT)") from None
            if len(point) != 3 or not all(math.isfinite(x) and x >= 0 for x in point):
                raise bad(name, "must be three finite probabilities >= 0 (IPT, PDT, GRT)")
            if abs(sum(point) - 1.0) > _TOL:
                raise bad(name, "must sum to 1")
            object.__setattr__(self, name, point)
        for prev, cur in (("start", "mid"), ("mid", "end")):
            a, b = getattr(self, prev), getattr(self, cur)
            if b[0] > a[0] + _TOL or b[1] < a[1] - _TOL or b[2] < a[2] - _TOL:
                raise bad(cur, f"violates Eq. 2 after {prev}={a}: IPT must not increase, PDT and GRT must not decrease")
        ranges = {"mid_at": ("(0, 1)", lambda v: 0.0 < v < 1.0), "ema": ("[0, 1)", lambda v: 0.0 <= v < 1.0),
                  "alpha": ("[0, 1]", lambda v: 0.0 <= v <= 1.0)}
        for name, (text, inside) in ranges.items():
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and inside(v)):
                raise bad(name, f"must lie in {text}")
        for name, positive in (("kp", False), ("ki", False), ("kd", False), ("beta", False), ("integral_limit", True),
                               ("sigma", True), ("tilt_beta", False), ("p_star_limit", True), ("deadband", False)):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and (v > 0 if positive else v >= 0)):
                raise bad(name, f"must be a finite number {'> 0' if positive else '>= 0'}")

    @property
    def controller_kind(self) -> Controller:
        """The controller in use: ``controller``, or the map's default (damped for tilt, pid for gaussian)."""
        if self.controller is not None:
            return self.controller
        return Controller.DAMPED if self.adaptive_map is AdaptiveMap.TILT else Controller.PID


# ---------------------------------------------------------------------------------- pure controller / map functions


def pid_step(ls: float, integral: float, prev_e: float | None, *, kp: float, ki: float, kd: float,
             integral_limit: float) -> tuple[float, float, float]:
    """Eq. 4 in discrete time (dt = 1 step): returns (error e = L_s, new integral, P*).

    I(t) = clip(I(t-1) + L_s(t), +-integral_limit) (anti-windup); the derivative is 0 on the first update.
    """
    integral = min(max(integral + ls, -integral_limit), integral_limit)
    deriv = 0.0 if prev_e is None else ls - prev_e
    return ls, integral, kp * ls + ki * integral + kd * deriv


def damped_step(ls: float, integral: float, prev_e: float | None, *, kp: float, ki: float, kd: float,
                integral_limit: float, window: int, deadband: float) -> tuple[float, float, float]:
    """Eq. 4 with the wander bounded: returns (error e, new integral, P*).

    e = sign(L_s) max(|L_s| - deadband, 0) ignores relative loss changes inside the noise band; the integral
    is a leaky *mean* of e over ~``window`` steps (Eq. 3's integral is read as a window mean too), so a
    zero-mean noisy L_s cannot accumulate and the integral reverts to 0 when the loss is steady.
    """
    e = math.copysign(max(abs(ls) - deadband, 0.0), ls)
    rho = 1.0 - 1.0 / window
    integral = min(max(rho * integral + (1.0 - rho) * e, -integral_limit), integral_limit)
    deriv = 0.0 if prev_e is None else e - prev_e
    return e, integral, kp * e + ki * integral + kd * deriv


def tilt_probs(static: np.ndarray, centred_ranks: np.ndarray, u: float, beta: float) -> np.ndarray:
    """Tilt map: p_i ∝ static_i exp(-beta u c_i); c_i in [-1, 1] (easiest -1). u = 0 returns ``static`` itself."""
    if u == 0.0 or beta == 0.0:
        return static
    logits = -beta * u * centred_ranks
    p = static * np.exp(logits - logits.max())
    return p / p.sum()


def gaussian_probs(ranks: np.ndarray, d_star: float, sigma: float) -> np.ndarray:
    """Legacy Gaussian map: p_i ∝ exp(-(rank_i - d*)^2 / (2 sigma^2))."""
    logits = -((ranks - d_star) ** 2) / (2.0 * sigma**2)
    p = np.exp(logits - logits.max())
    return p / p.sum()


class Curriculum:
    """Level distribution per step (``level_probs``/``sample``) driven by f_s(t) and the PID of Eq. 3-4."""

    def __init__(self, cfg: CurriculumConfig) -> None:
        self.cfg = cfg
        self.levels: list[Difficulty] = difficulty_levels(cfg.k_max)
        n = len(self.levels)
        self.ranks = np.arange(n, dtype=np.float64) / (n - 1)  # normalised difficulty rank, easiest 0
        self.centred_ranks = 2.0 * self.ranks - 1.0  # tilt map: easiest -1, hardest +1
        self._task_of = np.array([_TASKS.index(lv.task) for lv in self.levels])  # (n_levels,)
        self._per_task = np.bincount(self._task_of, minlength=3).astype(np.float64)  # levels per task
        self._reset()

    # ------------------------------------------------------------------------------ state

    def _reset(self) -> None:
        self.n_updates = 0  # accepted losses
        self.n_skipped = 0  # non-finite losses ignored
        self.smoothed: float | None = None  # EMA of the loss (L_c)
        self.history: deque[float] = deque(maxlen=self.cfg.window)  # past smoothed losses
        self.integral = 0.0  # pid: clamped sum of L_s; damped: clamped leaky mean of e
        self.prev_ls: float | None = None  # controller error e of the previous update (pid: L_s itself)
        self.loss_s = 0.0  # latest L_s (relative)
        self.p_star = 0.0  # latest P*

    def state_dict(self) -> dict:
        """JSON-serialisable state (numbers, lists, null); ``load_state_dict`` restores it exactly."""
        return {"version": _STATE_VERSION, "controller": self.cfg.controller_kind.value, "n_updates": self.n_updates,
                "n_skipped": self.n_skipped, "smoothed": self.smoothed, "history": [float(x) for x in self.history],
                "integral": self.integral, "prev_ls": self.prev_ls, "loss_s": self.loss_s, "p_star": self.p_star}

    def load_state_dict(self, d: dict) -> None:
        """Restore ``state_dict`` output; version 1 (no "controller" key, written by the PID-only code) loads too.

        The loss history (EMA, window) means the same for every controller. The integral and the previous
        error do not (a PID sum vs a damped leaky mean): when the state comes from the other controller they
        restart at 0 / None and P* is recomputed on the next ``update``.
        """
        version = d.get("version")
        if version not in (1, _STATE_VERSION):
            raise ValueError(f"unsupported curriculum state version {version!r} (expected 1 or {_STATE_VERSION})")
        saved = Controller.PID if version == 1 else Controller(d["controller"])
        self._reset()
        self.n_updates, self.n_skipped = int(d["n_updates"]), int(d["n_skipped"])
        self.smoothed = None if d["smoothed"] is None else float(d["smoothed"])
        self.history.extend(float(x) for x in d["history"])  # keeps the newest `window` if the window shrank
        self.loss_s = float(d["loss_s"])
        if saved is self.cfg.controller_kind:
            self.integral = float(d["integral"])
            self.prev_ls = None if d["prev_ls"] is None else float(d["prev_ls"])
            self.p_star = float(d["p_star"])

    # ------------------------------------------------------------------------------ adaptive component

    def update(self, loss: float) -> None:
        """Feed one optimizer step's loss, ALREADY averaged across DDP ranks (identical state on every rank).

        Non-finite losses are ignored (counted in ``n_skipped``) so one bad step cannot poison the state.
        """
        loss = float(loss)
        if not math.isfinite(loss):
            self.n_skipped += 1
            return
        c = self.cfg
        self.smoothed = loss if self.smoothed is None else c.ema * self.smoothed + (1.0 - c.ema) * loss
        if self.history:
            past = math.fsum(self.history) / len(self.history)  # Eq. 3: historical loss level
            ls = (self.smoothed - past) / max(abs(past), 1e-12)  # relative error -> scale-free gains
        else:
            ls = 0.0
        gains = {"kp": c.kp, "ki": c.ki, "kd": c.kd, "integral_limit": c.integral_limit}
        if c.controller_kind is Controller.PID:  # Eq. 4
            e, self.integral, self.p_star = pid_step(ls, self.integral, self.prev_ls, **gains)
        else:
            e, self.integral, self.p_star = damped_step(ls, self.integral, self.prev_ls, window=c.window,
                                                        deadband=c.deadband, **gains)
        self.prev_ls, self.loss_s = e, ls
        self.history.append(self.smoothed)
        self.n_updates += 1

    # ------------------------------------------------------------------------------ distributions

    def _progress(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return min(step / self.cfg.total_steps, 1.0)

    def _static_tasks(self, step: int) -> np.ndarray:
        c = self.cfg
        if c.mode is CurriculumMode.NONE:
            return np.full(3, 1.0 / 3.0)
        u = self._progress(step)
        a, b, w = (c.start, c.mid, u / c.mid_at) if u <= c.mid_at else (c.mid, c.end, (u - c.mid_at) / (1 - c.mid_at))
        p = (1.0 - w) * np.asarray(a) + w * np.asarray(b)
        return p / p.sum()

    def static_task_probs(self, step: int) -> dict[Task, float]:
        """f_s(t) (Eq. 2): static task probabilities at this step (uniform in mode NONE)."""
        return {t: float(p) for t, p in zip(_TASKS, self._static_tasks(step))}

    def _static_levels(self, step: int) -> np.ndarray:
        return self._static_tasks(step)[self._task_of] / self._per_task[self._task_of]

    def _targets(self, step: int) -> tuple[float, float]:
        """(d_ref, d*): static expected rank and the gaussian map's PID-shifted target rank."""
        d_ref = float(self._static_levels(step) @ self.ranks)
        return d_ref, min(max(d_ref - self.cfg.beta * self.p_star, 0.0), 1.0)

    def tilt_command(self) -> float:
        """Tilt map: u = clip(P*, +-p_star_limit)."""
        lim = self.cfg.p_star_limit
        return min(max(self.p_star, -lim), lim)

    def target_position(self, step: int) -> float:
        """The adaptive command as a fraction of its range, on [0, 1] (0 easiest, 1 hardest; 0 and 1 = at a bound).

        gaussian: d* itself (clipped to [0, 1]); tilt: (1 - u / p_star_limit) / 2 (0.5 = no tilt = LCL).
        Used to compare the controllers' wander on one scale (tests, benchmarks.curriculum_sim).
        """
        if self.cfg.adaptive_map is AdaptiveMap.GAUSSIAN:
            return self._targets(step)[1]
        return 0.5 * (1.0 - self.tilt_command() / self.cfg.p_star_limit)

    def adaptive_probs(self, step: int, static: np.ndarray | None = None) -> np.ndarray:
        """m_ad(P*) (Algorithm 1 line 11): the tilted static distribution, or the legacy Gaussian around d*.

        ``static``: this step's static level distribution if already computed (tilt returns that very array
        when it does not tilt).
        """
        if self.cfg.adaptive_map is AdaptiveMap.GAUSSIAN:
            return gaussian_probs(self.ranks, self._targets(step)[1], self.cfg.sigma)
        static = self._static_levels(step) if static is None else static
        return tilt_probs(static, self.centred_ranks, self.tilt_command(), self.cfg.tilt_beta)

    def level_probs(self, step: int) -> np.ndarray:
        """(n_levels,) distribution over ``self.levels`` used to draw at this step; sums to 1.

        Tilt map with u = 0 (or tilt_beta = 0): exactly the LINEAR (LCL) distribution of the same step.
        """
        static = self._static_levels(step)
        if self.cfg.mode is not CurriculumMode.ADAPTIVE:
            return static
        adaptive = self.adaptive_probs(step, static)
        if adaptive is static:  # untilted: the balance of static with itself
            return static
        p = (1.0 - self.cfg.alpha) * static + self.cfg.alpha * adaptive
        return p / p.sum()

    def sample(self, step: int, rng: np.random.Generator, n: int) -> list[Difficulty]:
        """n levels drawn i.i.d. from ``level_probs(step)`` with the caller's generator."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        idx = rng.choice(len(self.levels), size=n, p=self.level_probs(step))
        return [self.levels[i] for i in idx]

    def stats(self, step: int) -> dict[str, float]:
        """Logging: effective (p_*) and static (static_p_*) task probabilities, PID terms, target ranks."""
        probs = self.level_probs(step)
        eff = np.bincount(self._task_of, weights=probs, minlength=3)
        d_ref, d_star = self._targets(step)
        if self.cfg.adaptive_map is AdaptiveMap.TILT:  # d*: expected rank of the tilted (adaptive) distribution
            d_star = float(self.adaptive_probs(step) @ self.ranks)
        out = {f"p_{t.value}": float(p) for t, p in zip(_TASKS, eff)}
        out |= {f"static_p_{t.value}": float(p) for t, p in zip(_TASKS, self._static_tasks(step))}
        return out | {"p_star": self.p_star, "loss_s": self.loss_s, "integral": self.integral, "d_ref": d_ref,
                      "d_star": d_star, "target_position": self.target_position(step),
                      "expected_rank": float(probs @ self.ranks),
                      "loss_smoothed": math.nan if self.smoothed is None else self.smoothed}
