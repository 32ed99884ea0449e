"""Curriculum simulation: task mix and controller wander of LCL / DCL maps under a steady noisy loss.

No model is trained: a synthetic loss, mean 1 and gamma noise of coefficient of variation ``--cv``, is fed to
``training.curriculum.Curriculum`` for a whole run (Table 6: 50K steps) and the level distribution is read at
each training step. Variants: LCL (``mode=linear``), the legacy Gaussian map with the Eq. 4 PID
(``adaptive_map=gaussian``), and the default tilt map with the damped controller at several ``tilt_beta``.

Reported, each against a baseline measured in the same run:
* end-of-training task mix (mean over the last 5 % of steps) and its generation share / LCL's;
* the task mix at zero controller output (P* = 0) / LCL's (the Table 4 confound of issue 17);
* the controller target's wander: std of ``Curriculum.target_position`` (the command as a fraction of its
  range) and the fraction of steps it sits at a bound, tilt / gaussian;
* a sensitivity table (tilt_beta, window, alpha, deadband) of the tilt map.

    .venv/bin/python -m benchmarks.curriculum_sim                  # 50K steps, writes docs/curriculum/task_probs.png
    .venv/bin/python -m benchmarks.curriculum_sim --quick          # 5K steps, no plot, no sensitivity table

docs/curriculum.md explains the maps and quotes this output.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from model.masks import Task
from training.curriculum import Curriculum, CurriculumConfig, CurriculumMode

ROOT = Path(__file__).resolve().parent.parent

TASKS = (Task.INTERPOLATION, Task.PREDICTION, Task.GENERATION)
WARMUP = 500  # steps excluded from the wander statistics (the loss history fills up first)


def steady_losses(n: int, cv: float, seed: int) -> np.ndarray:
    """(n,) steady noisy loss: gamma with mean 1 and coefficient of variation ``cv`` (no trend)."""
    rng = np.random.default_rng(seed)
    return rng.gamma(1.0 / cv**2, cv**2, size=n)


def simulate(cfg: CurriculumConfig, losses: np.ndarray, every: int = 1) -> dict[str, np.ndarray]:
    """Feed ``losses[s]`` after step s; record at step s the target position (every step) and the task mix.

    Returns ``step`` (recorded steps), ``tasks`` (len(step), 3) effective (IPT, PDT, GRT) probabilities,
    ``target`` (n,) ``Curriculum.target_position`` of every step.
    """
    cur = Curriculum(cfg)
    n = len(losses)
    target = np.empty(n)
    steps = np.arange(0, n, every)
    tasks = np.empty((len(steps), 3))
    j = 0
    for s, loss in enumerate(losses):
        cur.update(float(loss))
        target[s] = cur.target_position(s)
        if s % every == 0:
            st = cur.stats(s)
            tasks[j] = [st[f"p_{t.value}"] for t in TASKS]
            j += 1
    return {"step": steps, "tasks": tasks, "target": target}


def wander(target: np.ndarray, warmup: int = WARMUP) -> tuple[float, float]:
    """(std, fraction of steps at a bound 0 or 1) of a target-position trace after ``warmup`` steps."""
    t = target[warmup:]
    return float(t.std()), float(np.mean((t <= 1e-9) | (t >= 1.0 - 1e-9)))


def zero_output_mix(cfg: CurriculumConfig, step: int) -> np.ndarray:
    """(IPT, PDT, GRT) effective probabilities at ``step`` with the controller output P* = 0 (no losses fed)."""
    st = Curriculum(cfg).stats(step)
    return np.array([st[f"p_{t.value}"] for t in TASKS])


def end_mix(res: dict[str, np.ndarray], frac: float = 0.05) -> np.ndarray:
    """Mean task mix over the last ``frac`` of the recorded steps."""
    k = max(1, int(len(res["step"]) * frac))
    return res["tasks"][-k:].mean(0)


def variants(steps: int) -> dict[str, CurriculumConfig]:
    base = CurriculumConfig(total_steps=steps)
    return {"LCL": dataclasses.replace(base, mode=CurriculumMode.LINEAR),
            "gaussian (legacy, pid)": dataclasses.replace(base, adaptive_map="gaussian"),
            "tilt beta=0.5": dataclasses.replace(base, tilt_beta=0.5),
            "tilt beta=1 (default)": base,
            "tilt beta=2": dataclasses.replace(base, tilt_beta=2.0)}


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in p) + ")"


ABBR = {Task.INTERPOLATION: "IPT", Task.PREDICTION: "PDT", Task.GENERATION: "GRT"}
COLOURS = {"LCL": "black", "gaussian (legacy, pid)": "tab:red", "tilt beta=0.5": "tab:cyan",
           "tilt beta=1 (default)": "tab:blue", "tilt beta=2": "tab:purple"}


def plot(steady: dict[str, dict[str, np.ndarray]], events: dict[str, dict[str, np.ndarray]],
         event_losses: np.ndarray, path: Path, cv: float, smooth: int, zoom: tuple[int, int]) -> None:
    """Row 1: steady noisy loss (task probabilities, target-position histogram); row 2: loss events, zoomed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(18, 8.4), constrained_layout=True)
    kernel = np.ones(smooth) / smooth
    for name, res in steady.items():
        x = res["step"] / 1000
        for i in range(3):
            y = res["tasks"][:, i]
            kw = {"color": COLOURS[name], "lw": 2.0 if name == "LCL" else 1.3, "ls": "--" if name == "LCL" else "-",
                  "zorder": 3 if name == "LCL" else 2}
            axes[0, i].plot(x[smooth - 1:], np.convolve(y, kernel, mode="valid"), label=name, **kw)
            if name in ("gaussian (legacy, pid)", "tilt beta=1 (default)"):
                axes[0, i].plot(x, y, color=COLOURS[name], lw=0.4, alpha=0.25, zorder=1)
    for i, task in enumerate(TASKS):
        axes[0, i].set_title(f"steady noisy loss: P({ABBR[task]})")
        axes[0, i].set_xlabel("training step (K)")
        axes[0, i].set_ylim(0, 0.75)
    axes[0, 0].set_ylabel(f"task probability (line: mean of {smooth} points; faint: raw)")
    axes[0, 2].legend(loc="upper left", fontsize=8)
    bins = np.linspace(0, 1, 41)
    for name in ("gaussian (legacy, pid)", "tilt beta=1 (default)"):
        t = steady[name]["target"][WARMUP:]
        std, bound = wander(steady[name]["target"])
        axes[0, 3].hist(np.clip(t, 0, 1), bins=bins, color=COLOURS[name], alpha=0.55, density=True,
                        label=f"{name}: std {std:.2f}, at a bound {bound:.0%}")
    axes[0, 3].set_yscale("log")
    axes[0, 3].set_title("steady loss: controller target position")
    axes[0, 3].set_xlabel("target position (0, 1: bounds; tilt off = 0.5)")
    axes[0, 3].set_ylabel("density (log)")
    axes[0, 3].legend(loc="upper center", fontsize=8)
    lo, hi = zoom
    order = {"gaussian (legacy, pid)": 1, "tilt beta=2": 2, "tilt beta=1 (default)": 3, "tilt beta=0.5": 4, "LCL": 5}
    for name, res in events.items():  # drawn so that the smaller tilts stay visible on top of the larger ones
        sel = (res["step"] >= lo) & (res["step"] < hi)
        x = res["step"][sel] / 1000
        for i in range(3):
            axes[1, i].plot(x, res["tasks"][sel, i], color=COLOURS[name], lw=1.8 if name == "LCL" else 0.9,
                            ls="--" if name == "LCL" else "-", label=name, zorder=order[name],
                            alpha=0.45 if name.startswith("gaussian") else 1.0)
    for i, task in enumerate(TASKS):
        axes[1, i].set_title(f"loss events (zoom, raw): P({ABBR[task]})")
        axes[1, i].set_xlabel("training step (K)")
    axes[1, 0].set_ylabel("task probability")
    ema = np.empty_like(event_losses)
    acc = event_losses[0]
    for k, v in enumerate(event_losses):
        acc = 0.9 * acc + 0.1 * v
        ema[k] = acc
    xs = np.arange(lo, hi)
    axes[1, 3].plot(xs / 1000, event_losses[lo:hi], color="0.7", lw=0.4, label="loss")
    axes[1, 3].plot(xs / 1000, ema[lo:hi], color="black", lw=1.0, label="EMA 0.9 (L_c)")
    axes[1, 3].set_title(f"loss events: x1.3, then x0.7, {(hi - lo) // 5} steps each")
    axes[1, 3].set_xlabel("training step (K)")
    axes[1, 3].legend(loc="upper right", fontsize=8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Curriculum task mix, LCL vs DCL maps, simulated loss (gamma, mean 1, cv {cv}); "
                 "benchmarks/curriculum_sim.py")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


EVENT_AT = 0.44  # the x1.3 episode starts at this fraction of the run; the x0.7 one 2 episode lengths later


def event_window(steps: int) -> tuple[int, int]:
    """(start of the x1.3 episode, episode length): 1000 steps, or a tenth of a shorter run."""
    return int(EVENT_AT * steps), min(1000, steps // 10)


def event_losses(steps: int, cv: float, seed: int) -> np.ndarray:
    """Steady noisy loss with a sustained x1.3 and, after a steady gap, a x0.7 episode (same noise draws)."""
    losses = steady_losses(steps, cv, seed)
    a, d = event_window(steps)
    losses[a:a + d] *= 1.3
    losses[a + 2 * d:a + 3 * d] *= 0.7
    return losses


def sensitivity(steps: int, cv: float, seed: int) -> list[tuple[str, float, float, float, float, float]]:
    """Tilt map, one change at a time: (setting, end GRT share, std of GRT - LCL's GRT, target std, at-bound,
    ``event_response``)."""
    base = CurriculumConfig(total_steps=steps)
    losses, ev = steady_losses(steps, cv, seed), event_losses(steps, cv, seed)
    lcl = simulate(dataclasses.replace(base, mode=CurriculumMode.LINEAR), losses, every=10)
    rows = []
    grid = [("default (beta 1, window 100, alpha 0.5, deadband 0.05)", {})]
    grid += [(f"tilt_beta={b}", {"tilt_beta": b}) for b in (0.5, 2.0)]
    grid += [(f"window={w}", {"window": w}) for w in (25, 400)]
    grid += [(f"alpha={a}", {"alpha": a}) for a in (0.25, 1.0)]
    grid += [(f"deadband={d}", {"deadband": d}) for d in (0.0, 0.1)]
    grid += [("controller=pid (Eq. 4 sum integral)", {"controller": "pid"})]
    for name, kw in grid:
        cfg = dataclasses.replace(base, **kw)
        res = simulate(cfg, losses, every=10)
        std, bound = wander(res["target"])
        dev = (res["tasks"][:, 2] - lcl["tasks"][:, 2])[WARMUP // 10:]
        rows.append((name, float(end_mix(res)[2]), float(dev.std()), std, bound,
                     event_response(simulate(cfg, ev, every=10), res, steps)))
    return rows


RESPONSE_STEPS = 200  # steps after the x1.3 loss step over which the response is averaged (2 x the default window)


def event_response(event: dict[str, np.ndarray], steady: dict[str, np.ndarray], steps: int) -> float:
    """Paired response to the x1.3 loss step: mean over RESPONSE_STEPS of GRT(event run) - GRT(steady run).

    Same variant, same noise draws, only the multiplier differs, so the variant's own bias cancels out.
    Negative = the curriculum moved toward easier tasks while the loss was high (the intended damping).
    """
    a = event_window(steps)[0]
    sel = (event["step"] >= a) & (event["step"] < a + RESPONSE_STEPS)
    return float((event["tasks"][sel, 2] - steady["tasks"][sel, 2]).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50_000, help="training steps = total_steps (Table 6: 50K)")
    ap.add_argument("--cv", type=float, default=0.3, help="coefficient of variation of the per-step loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "curriculum" / "task_probs.png"), help="plot path")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quick", action="store_true", help="5K steps, no plot, no sensitivity table")
    args = ap.parse_args(argv)
    steps = 5_000 if args.quick else args.steps
    t0 = time.perf_counter()
    losses = steady_losses(steps, args.cv, args.seed)
    every = max(1, steps // 1000)
    results = {name: simulate(cfg, losses, every) for name, cfg in variants(steps).items()}
    print(f"steady noisy loss: gamma mean 1, cv {args.cv}, {steps} steps, seed {args.seed}")
    print("\nend-of-training task mix (IPT, PDT, GRT)   zero output P*=0        noisy run (last 5 %)")
    lcl_zero, lcl_end = zero_output_mix(variants(steps)["LCL"], steps), end_mix(results["LCL"])
    for name, cfg in variants(steps).items():
        print(f"  {name:24s}                {_fmt(zero_output_mix(cfg, steps))}   {_fmt(end_mix(results[name]))}")
    print("\nwander of the controller target (target_position, after the first 500 steps)")
    stats = {name: wander(res["target"]) for name, res in results.items() if name != "LCL"}
    lcl_grt = results["LCL"]["tasks"][:, 2]
    for name, (std, bound) in stats.items():
        dev = results[name]["tasks"][:, 2] - lcl_grt
        print(f"  {name:24s} std {std:.3f}   at a bound {bound:6.1%}   GRT - LCL's GRT: mean {dev.mean():+.3f} "
              f"std {dev.std():.3f}")
    old, new = stats["gaussian (legacy, pid)"], stats["tilt beta=1 (default)"]
    gauss_zero = zero_output_mix(variants(steps)["gaussian (legacy, pid)"], steps)
    tilt_zero = zero_output_mix(variants(steps)["tilt beta=1 (default)"], steps)
    print("\nratios (baseline measured in this run)")
    print(f"  GRT share at P*=0, gaussian / LCL:           {gauss_zero[2] / lcl_zero[2]:.3f}")
    print(f"  GRT share at P*=0, tilt / LCL:               {tilt_zero[2] / lcl_zero[2]:.3f}")
    print(f"  GRT share end of noisy run, gaussian / LCL:  {end_mix(results['gaussian (legacy, pid)'])[2] / lcl_end[2]:.3f}")
    print(f"  GRT share end of noisy run, tilt / LCL:      {end_mix(results['tilt beta=1 (default)'])[2] / lcl_end[2]:.3f}")
    print(f"  target std, tilt / gaussian:                 {new[0] / old[0]:.3f}")
    print(f"  time at a bound, tilt / gaussian:            {new[1] / old[1] if old[1] else float('nan'):.3f}")
    if not args.quick:
        n_sens = min(steps, 20_000)
        print(f"\nsensitivity of the tilt map ({n_sens} steps, one change at a time): end-of-run GRT share / LCL's;"
              " std of GRT - LCL's GRT;\n  target wander; GRT change in the 200 steps after a x1.3 loss step")
        lcl_g = end_mix(simulate(variants(n_sens)["LCL"], steady_losses(n_sens, args.cv, args.seed), every=10))[2]
        for name, g_end, dev, std, bound, resp in sensitivity(n_sens, args.cv, args.seed):
            print(f"  {name:54s} GRT end /LCL {g_end / lcl_g:.3f}  dev std {dev:.3f}  target std {std:.3f}  "
                  f"at bound {bound:5.1%}  x1.3 response {resp:+.3f}")
    ev = event_losses(steps, args.cv, args.seed)
    a, d = event_window(steps)
    ev_every = max(1, steps // 10_000)
    events = {name: simulate(cfg, ev, ev_every) for name, cfg in variants(steps).items()}
    print(f"\nresponse to a x1.3 loss step at step {a}: GRT share change over the next {RESPONSE_STEPS} steps "
          "(event run - steady run)")
    for name in variants(steps):
        steady_fine = simulate(variants(steps)[name], losses, ev_every)
        print(f"  {name:24s} {event_response(events[name], steady_fine, steps):+.3f}")
    if not (args.no_plot or args.quick):
        zoom = (a - d, a + 4 * d)
        plot(results, events, ev, Path(args.out), args.cv, smooth=max(1, len(results["LCL"]["step"]) // 50), zoom=zoom)
        print(f"\nplot: {args.out}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
