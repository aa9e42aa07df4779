"""Several processes on one validation run: ``accelerate launch -m tireg validate ...``.

Why files, not ``gather_object``: accelerate gathers Python objects by pickling them, and tireg
never unpickles anything. Each process writes its images (atomically) where the run's plan says
they go; after a barrier the main process reads them back, builds the one grid and records the
run. Every process makes the same plan from the same inputs, so nothing needs to be sent.

Under a plain ``tireg validate`` there is one process and accelerate is not even imported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class Workers:
    """This process's place among the run's processes (one, unless launched by accelerate or
    torchrun, which set ``WORLD_SIZE``), and the device it renders on (``requested``:
    ``auto``, ``cuda``, ``mps`` or ``cpu``).

    Processes on CPUs need ``PartialState(cpu=True)``: only then does accelerate join them
    with the gloo backend (``MULTI_CPU``). Note that ``accelerate launch --cpu`` starts a single
    process unless MPI is set up (accelerate's ``simple_launcher``); what starts N processes,
    on GPUs and on CPUs alike, is ``accelerate launch --multi_gpu --num_processes N
    --num_machines 1 --mixed_precision no --dynamo_backend no -m tireg validate ...`` (torchrun
    underneath; without CUDA this class then asks for the CPU state, and gloo joins them)."""

    def __init__(self, requested: str = "auto") -> None:
        self._requested = requested
        self._state: Any = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            cpu = requested == "cpu" or not torch.cuda.is_available()
            self._state = PartialState(cpu=cpu)

    @property
    def count(self) -> int:
        return 1 if self._state is None else int(self._state.num_processes)

    @property
    def kind(self) -> str:
        """How the processes are joined, as accelerate names it: ``MULTI_CPU (gloo)``, say."""
        if self._state is None:
            return "one process"
        return f"{self._state.distributed_type.value} ({self._state.backend})"

    @property
    def is_main(self) -> bool:
        return self._state is None or bool(self._state.is_main_process)

    def device(self) -> str:
        """The device for this process: accelerate's kind of device when several processes
        share a run and the user asked for ``auto`` (accelerate already made ``cuda`` mean this
        process's own GPU), else the one asked for."""
        if self._state is not None and self._requested == "auto":
            return str(self._state.device.type)
        from tireg.pipelines.loading import pick_device

        return pick_device(self._requested)

    @contextlib.contextmanager
    def share(self, items: Sequence[T]) -> Iterator[list[T]]:
        """This process's contiguous share of ``items``
        (``PartialState.split_between_processes``)."""
        if self._state is None:
            yield list(items)
            return
        with self._state.split_between_processes(list(items)) as mine:
            yield list(mine)

    def wait(self) -> None:
        """A barrier: return when every process got here."""
        if self._state is not None:
            self._state.wait_for_everyone()
