"""Rank-0 progress lines: throttled by time, first and last step always, ETA and task probabilities in the line."""

from __future__ import annotations

import io

from training.progress import Progress, format_eta, progress_line


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


class _Pipes:  # the part of dagster_pipes' context Progress uses: .log.info
    def __init__(self):
        self.log = _Log()


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_line_has_step_loss_rate_eta_and_task_probabilities():
    line = progress_line(40, 200, {"loss": 0.18341, "curriculum_p_generation": 0.6, "curriculum_p_interpolation": 0.25,
                                   "curriculum_p_prediction": 0.15}, 5.24, 31.4)
    assert line == "step 40/200 (20%) | loss 0.1834 | 5.2 samples/s | ETA 0:00:31 | p(gen) 0.60 p(interp) 0.25 p(pred) 0.15"
    assert format_eta(float("nan")) == "?" and format_eta(float("inf")) == "?" and format_eta(3725) == "1:02:05"


def test_updates_are_throttled_but_first_and_last_steps_always_report():
    clock, pipes, out = _Clock(), _Pipes(), io.StringIO()
    p = Progress(pipes, target=10, start_step=0, interval_s=5.0, clock=clock, stream=out)
    written = []
    for step in range(1, 11):
        clock.t += 1.0  # one step per second
        written.append(p.update(step, {"loss": 1.0 / step, "samples_per_s": 4.0}))
    assert written == [True, False, False, False, False, True, False, False, False, True]  # 1, 6 (5 s later), 10
    assert pipes.log.lines == [line.removeprefix("[train] ") for line in out.getvalue().splitlines()]
    assert pipes.log.lines[-1].startswith("step 10/10 (100%) | loss 0.1000 | 4.0 samples/s | ETA 0:00:00")
    assert "ETA 0:00:09" in pipes.log.lines[0]  # 9 steps left at 1 step/s


def test_a_broken_pipes_channel_falls_back_to_the_console():
    class Broken:
        class log:  # noqa: N801 - mimics the attribute
            @staticmethod
            def info(message):
                raise OSError("pipe closed")

    out = io.StringIO()
    p = Progress(Broken(), target=2, start_step=0, interval_s=0, stream=out)
    p.say("phase one")
    p.say("phase two")
    assert p.pipes is None and out.getvalue().count("[train]") == 2


def test_throttled_reports_at_most_once_per_interval_unless_forced():
    from training.progress import throttled

    now, said = [0.0], []
    tick = throttled(said.append, interval_s=10, clock=lambda: now[0])
    assert tick("a") is True  # the first call always reports
    now[0] = 4.0
    assert tick("b") is False
    assert tick("c", force=True) is True  # a phase change is never swallowed
    now[0] = 13.9
    assert tick("d") is False  # 9.9 s after the forced line
    now[0] = 14.0
    assert tick("e") is True
    assert said == ["a", "c", "e"]
