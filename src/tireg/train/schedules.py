"""A1111's ``rate:step, rate:step, ..., rate`` schedules, for the learning rate and the clip value.

Semantics follow A1111's ``modules/textual_inversion/learn_schedule.py``
(``LearnScheduleIterator``): each ``rate:step`` pair holds until that step; ``rate:-1`` or a
bare last ``rate`` holds to the last step; a step beyond the run's last step is cut to it and
ends the list; when every pair is used up the run ends (A1111's ``scheduler.finished``).
Unlike A1111's iterator, which is rebuilt skipping the pairs already passed on resume, the
value here is a pure function of the step, so a resumed run needs no schedule state beyond
the step itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from tireg.train.errors import ScheduleError


@dataclass(frozen=True)
class Schedule:
    """Piecewise-constant values: ``pieces[i] = (value, end_step)``, end steps increasing."""

    text: str
    pieces: tuple[tuple[float, int], ...]

    @classmethod
    def parse(cls, text: str, max_steps: int, *, what: str = "learning rate") -> Schedule:
        """Parse ``text`` for a run of ``max_steps`` steps; a bad piece is one clear error."""
        pieces: list[tuple[float, int]] = []
        for raw in text.split(","):
            piece = raw.strip()
            if not piece:
                continue
            value_text, _, step_text = piece.partition(":")
            try:
                value = float(value_text)
                end = max_steps if not step_text or int(step_text) == -1 else int(step_text)
            except ValueError:
                raise ScheduleError(
                    f"{what} schedule {text!r}: cannot read {piece!r}",
                    hint='write "rate:step, rate:step, rate", e.g. "0.005:100, 1e-3:1000, 1e-5"',
                ) from None
            if value < 0 or end <= (pieces[-1][1] if pieces else 0):
                raise ScheduleError(
                    f"{what} schedule {text!r}: {piece!r} must be a value >= 0 ending after "
                    "the previous step",
                )
            pieces.append((value, min(end, max_steps)))
            if not step_text or end >= max_steps:
                break
        if not pieces:
            raise ScheduleError(f"{what} schedule {text!r} is empty", hint='e.g. "0.005"')
        return cls(text, tuple(pieces))

    def value_at(self, step: int) -> float | None:
        """The value in force for the optimizer step taken at ``step`` (0-based), or None once
        the schedule has ended (the run stops there, as A1111's does)."""
        for value, end in self.pieces:
            if step < end:
                return value
        return None

    @property
    def last_step(self) -> int:
        """The step at which the schedule ends."""
        return self.pieces[-1][1]
