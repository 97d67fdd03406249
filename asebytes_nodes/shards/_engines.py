"""Where partition tasks run: one small interface, a serial loop and Dask behind it.

Work is cut into independent tasks by a plain function; an engine only maps that
function over the tasks and returns the results in task order (the shape of
MDAnalysis' ``analysis/backends.py``). A second function ``then`` may finish each
result: both run in one task. The serial engine once finished results in a background
thread while the next task ran; that cost CPU instead of saving time (20,000 frames as 5
LMDB shards, 3 alternating runs: 8.46 s with the thread, 8.26 s without, 8.29 s as one
shard: the hashing thread taking the GIL back after every block interrupts the parser).
Dask is imported only when a Dask engine is chosen; without it installed that fails with
the ``pip install`` to run.

* ``workers=1`` and no ``scheduler``: :class:`SerialEngine`, in this process.
* ``scheduler="synchronous"`` (or ``"threads"``, ``"processes"``): Dask's local
  schedulers through ``dask.compute`` (the synchronous one gives fast, deterministic tests).
* ``workers>1``: a ``dask.distributed.LocalCluster`` of ``workers`` processes with one
  thread each, started here (:func:`local_cluster`) and closed at the end. Its workers run
  without the dashboard's bookkeeping (:data:`QUIET`): measured on a 20,000-frame extxyz to
  LMDB, a default worker spent 15-30 % more CPU than the serial loop on the same tasks (the
  statistical profiler sampling the task thread every 10 ms, monitors waking the event loop
  every 20-100 ms, glibc returning freed memory to the system at 64 KiB), a quiet one 6-10 %.
* ``scheduler="tcp://host:8786"``: the scheduler of a running cluster, for instance one a
  ``dask_jobqueue.SLURMCluster`` started (see :func:`asebytes_nodes.shards.convert_sharded`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, Protocol

from ..errors import MissingExtraError
from ..progress import progress

__all__ = ["QUIET", "DaskEngine", "Engine", "SerialEngine", "engine_for", "local_cluster"]

_LOCAL_SCHEDULERS = ("synchronous", "sync", "single-threaded", "threads", "processes")
_WINDOW = 8  # tasks submitted to a cluster at least at a time (see DaskEngine.map)

#: Dask settings of the clusters started here: no statistical profiler (it feeds the dashboard,
#: which is off), monitors waking once a second instead of every 20-500 ms, and glibc's
#: default trimming of freed memory instead of Dask's 64 KiB (page faults in the tasks).
QUIET: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "1s",
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 128 << 20,
}


def local_cluster(workers: int, imports: Sequence[str] = ()) -> Any:
    """A ``LocalCluster`` of ``workers`` processes of one thread each, set up :data:`QUIET`, whose
    workers import ``imports`` as they start (in parallel, before any task)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(QUIET):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            preload=list(imports),
        )


class Engine(Protocol):
    """Maps a function over tasks (and ``then`` over its results); results come back in task order."""

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        *,
        desc: str,
        then: Callable[[Any], Any] | None = None,
        frames: Sequence[int] | None = None,
    ) -> list[Any]: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def _bar(
    tasks: Sequence[Any], frames: Sequence[int] | None, desc: str, show: bool | None
) -> Iterator[tuple[Any, Sequence[int]]]:
    """A bar in frames, advanced by each task's ``frames`` (a conversion of many frames in a few
    partitions drew none: bars start at 5,000 units); without counts, in partitions, drawn however
    few."""
    if frames is not None:
        with progress(sum(frames), desc, enabled=show) as bar:
            yield bar, frames
    else:
        with progress(len(tasks), desc, unit="partitions", enabled=show, min_total=1) as bar:
            yield bar, [1] * len(tasks)


class SerialEngine:
    """Every task in this process, one after the other."""

    def __init__(self, show_progress: bool | None = None) -> None:
        self._show = show_progress

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        *,
        desc: str,
        then: Callable[[Any], Any] | None = None,
        frames: Sequence[int] | None = None,
    ) -> list[Any]:
        """``fn`` then ``then`` on each task here, one task after the other."""
        results = []
        with _bar(tasks, frames, desc, self._show) as (bar, steps):
            for task, step in zip(tasks, steps, strict=True):
                result = fn(task)
                results.append(result if then is None else then(result))
                bar.update(step)
        return results

    def close(self) -> None:
        """Nothing to release."""


class DaskEngine:
    """Tasks on Dask: a local scheduler, a ``LocalCluster`` of worker processes, or a running cluster."""

    def __init__(
        self,
        workers: int,
        scheduler: str | None,
        show_progress: bool | None = None,
        imports: Sequence[str] = (),
    ) -> None:
        try:
            import dask  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError(
                f'parallel conversion needs Dask ({exc}); install it with: pip install "asebytes-nodes[dask]"'
            ) from exc
        self._show = show_progress
        self._local = scheduler if scheduler in _LOCAL_SCHEDULERS else None
        self._client: Any = None
        self._cluster: Any = None
        if self._local is not None:
            return
        try:
            from distributed import Client
        except ImportError as exc:
            raise MissingExtraError(
                f"a Dask cluster needs dask.distributed ({exc}); install it with: "
                'pip install "asebytes-nodes[dask]"'
            ) from exc
        if scheduler is None:
            self._cluster = local_cluster(workers, imports)
            self._client = Client(self._cluster)
        else:
            self._client = Client(scheduler)
            with contextlib.suppress(OSError):  # a worker lost meanwhile (CommClosedError): no matter
                # at once on every worker, not in the first task
                self._client.run(_import_all, list(imports), on_error="ignore")

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        *,
        desc: str,
        then: Callable[[Any], Any] | None = None,
        frames: Sequence[int] | None = None,
    ) -> list[Any]:
        if then is not None:
            fn = functools.partial(_chained, fn, then)
        if self._local is not None:
            from dask.base import compute
            from dask.delayed import delayed

            return list(compute(*[delayed(fn, pure=False)(t) for t in tasks], scheduler=self._local))
        from distributed import as_completed

        # Tasks are submitted a window at a time (twice the cluster's threads, at least
        # _WINDOW): an extxyz partition carries its rows of the byte-offset index (480 kB for
        # 20,000 frames), and a graph of every task at once would hold the whole index on the
        # scheduler (23 MiB at 10^6 frames, 2.3 GB at 10^8). retries=1: a task whose worker died
        # runs again elsewhere (its shard has a temporary name until complete, so a killed
        # attempt leaves no partial shard).
        todo = list(enumerate(tasks))[::-1]
        results: list[Any] = [None] * len(todo)
        running: dict[Any, int] = {}

        def top_up(queue: Any) -> None:
            window = max(_WINDOW, 2 * sum(self._client.nthreads().values()))
            while todo and len(running) < window:
                k, task = todo.pop()
                future = self._client.submit(fn, task, pure=False, retries=1)
                running[future] = k
                queue.add(future)

        try:
            with _bar(tasks, frames, desc, self._show) as (bar, steps):
                queue = as_completed()
                top_up(queue)
                for future in queue:
                    k = running.pop(future)
                    results[k] = future.result()  # the first failure raises its own error
                    bar.update(steps[k])
                    top_up(queue)
            return results
        finally:
            self._client.cancel(list(running))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _chained(fn: Callable[[Any], Any], then: Callable[[Any], Any], task: Any) -> Any:
    """``then(fn(task))``: both steps of a task in one Dask task (picklable with module-level functions)."""
    return then(fn(task))


def _import_all(modules: list[str]) -> None:
    """Import ``modules`` here (run on each worker of a running cluster); a missing one is left
    for the task to report."""
    for module in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def engine_for(
    workers: int, scheduler: str | None, show_progress: bool | None = None, imports: Sequence[str] = ()
) -> Engine:
    """The serial engine for one worker and no scheduler, else Dask (whose workers import ``imports``
    before the first task)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 and scheduler is None:
        return SerialEngine(show_progress)
    refuse_rerun(workers, scheduler)
    return DaskEngine(workers, scheduler, show_progress, imports)


def refuse_rerun(workers: int, scheduler: str | None) -> None:
    """Refuse to start a local cluster from a spawned worker re-running the user's script (whose
    top level starts the conversion): it would start workers of its own and fail on the lock."""
    frame: FrameType | None = sys._getframe()
    while frame is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__"
    ):
        frame = frame.f_back  # a spawned process imports the script as __mp_main__
    if workers > 1 and scheduler is None and frame is not None:
        raise RuntimeError(
            f"workers={workers}: the script that starts this conversion runs again in each Dask worker "
            "process it starts; put the conversion under `if __name__ == \"__main__\":`"
        )
