"""Data parallelism for the trainer: what a training loop does differently when several processes share the work.

:class:`SingleProcess` is the default. :class:`TorchDistributed` runs the same loop in every process of a
``torch.distributed`` process group (gloo on CPU, nccl on GPUs): each process takes its share of every global
minibatch, gradients are averaged with one coalesced all-reduce per step (weighted by the share sizes, so the
update equals the single-process one up to summation order), and only rank 0 writes files.

Two ways in:

* ``TrainConfig(world_size=2)`` (``softsym fit --nproc 2``): the trainer spawns the processes itself on this
  machine (gloo, a FileStore rendezvous in a temporary directory) and returns rank 0's result.
* Your own launcher (``torchrun``, SLURM): initialise the default process group, then pass
  ``Trainer(..., strategy=TorchDistributed())`` in every process.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, List, Optional

import torch

from . import errors
from .errors import ConfigError

__all__ = ["Strategy", "SingleProcess", "TorchDistributed", "threads_per_process"]


class Strategy:
    """Everything the loop does differently under data parallelism.

    ``shard`` picks this process's share of a global minibatch, ``all_reduce_gradients`` averages gradients,
    ``all_reduce_sum`` / ``reduce_mean`` combine statistics, ``broadcast_*`` make every process start from rank
    0's state, ``is_main`` decides who writes the run directory."""

    world_size = 1
    rank = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the run directory."""
        return self.rank == 0

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's share of a global minibatch's sample indices."""
        return indices[self.rank::self.world_size]

    def all_reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of ``params`` over the processes, in place."""
        raise NotImplementedError

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum of ``values`` over the processes (e.g. per-share loss totals)."""
        raise NotImplementedError

    def reduce_mean(self, value: float) -> float:
        """Mean of a number over the processes."""
        raise NotImplementedError

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every process, in place."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable), returned on every process."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every process gets here."""
        raise NotImplementedError

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 only; every process returns its result, or raises its SoftsymError (why: run-directory
        checks must happen once, and a refusal must stop every process, not leave them waiting in a collective)."""
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except errors.SoftsymError as exc:
                outcome = ("error", type(exc).__name__, str(exc))
        outcome = self.broadcast_object(outcome)
        if outcome[0] == "error":
            raise remote_error(outcome[1], outcome[2])
        return outcome[1]


def remote_error(name: str, message: str) -> errors.SoftsymError:
    """The SoftsymError subclass ``name`` (as raised in another process) with its message."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.SoftsymError)):
        cls = errors.SoftsymError
    return cls(message)


class SingleProcess(Strategy):
    """One process: no sharding, no communication."""

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        return indices

    def all_reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        return None

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def reduce_mean(self, value: float) -> float:
        return value

    def broadcast_module(self, module: torch.nn.Module) -> None:
        return None

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        return None

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        return fn()


class TorchDistributed(Strategy):
    """The current ``torch.distributed`` process group (initialise it first, e.g. under ``torchrun``).

    Gradients are flattened into one buffer per dtype/device and all-reduced at once (one message per step, not
    one per parameter); parameters without a gradient count as zero gradients on that process. ``group``: the
    ``torch.distributed`` process group to use (default None: the default group).
    """

    def __init__(self, group: Optional[Any] = None) -> None:
        import torch.distributed as dist

        if not dist.is_available():
            raise ConfigError("torch.distributed is not available in this PyTorch build; train with world_size=1")
        if not dist.is_initialized():
            raise ConfigError("TorchDistributed needs an initialised process group: call "
                              "torch.distributed.init_process_group(...) in every process (torchrun does the "
                              "environment for you), or use TrainConfig(world_size=N) to let softsym spawn them")
        self._dist, self.group = dist, group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        backend = str(dist.get_backend(group)).lower()
        self._device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def _comm(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self._device)

    def all_reduce_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        params = [p for p in params if p.requires_grad]
        buckets = {}
        for p in params:
            buckets.setdefault((p.dtype, p.device), []).append(p)
        for ps in buckets.values():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            flat = self._comm(torch.cat([g.reshape(-1) for g in grads]))
            self._dist.all_reduce(flat, group=self.group)
            flat /= self.world_size
            offset = 0
            for p in ps:
                n = p.numel()
                chunk = flat[offset:offset + n].view_as(p).to(p.device)
                if p.grad is None:
                    p.grad = chunk.clone()
                else:
                    p.grad.copy_(chunk)
                offset += n

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        out = self._comm(values.detach().to(torch.float64).clone())
        self._dist.all_reduce(out, group=self.group)
        return out.to(values.device)

    def reduce_mean(self, value: float) -> float:
        return float(self.all_reduce_sum(torch.tensor([float(value)]))[0]) / self.world_size

    def broadcast_module(self, module: torch.nn.Module) -> None:
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                buf = self._comm(t.detach().clone())
                self._dist.broadcast(buf, src=0, group=self.group)
                t.copy_(buf.to(t.device))

    def broadcast_object(self, obj: Any) -> Any:
        box: List = [obj if self.rank == 0 else None]
        self._dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        self._dist.barrier(group=self.group)


def threads_per_process(world_size: int, total: Optional[int] = None) -> int:
    """CPU threads for each of ``world_size`` processes on this machine (why: N processes x all cores each
    oversubscribe the CPU and run slower than one process)."""
    import os

    if total is None:
        total = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, math.floor(total / max(1, world_size)))


# ====================================================================== local spawning (TrainConfig(world_size=N))
def _global_rng_state() -> dict:
    import random

    import numpy as np

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_global_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


#: interrupt handlers of the runs in progress in this process, innermost last (the trainer registers its own);
#: a spawned process's parent forwards stop requests to the last one
STOP_TARGETS: list = []
#: the signal numbers that asked this process to stop, first one first (the CLI exits with 128 + the first)
STOP_SIGNALS: List[int] = []


def note_stop_signal(signum: int) -> None:
    """Remember that signal ``signum`` asked this process to stop (read by :func:`stop_exit_status`)."""
    STOP_SIGNALS.append(int(signum))


def stop_exit_status() -> int:
    """The shell's exit status of a process stopped by the first signal noted: 143 for SIGTERM, 130 for SIGINT
    (also when none was noted: a KeyboardInterrupt is a Ctrl-C). Clears the record."""
    status = 128 + STOP_SIGNALS[0] if STOP_SIGNALS else 130
    STOP_SIGNALS.clear()
    return status


#: a stop request that came before the run's loop registered its handler (set by the SIGUSR1 handler)
_PENDING_STOP: List[bool] = [False]


def take_pending_stop() -> bool:
    """Whether the parent asked this process to stop before the training loop started (and clear the request)."""
    pending, _PENDING_STOP[0] = _PENDING_STOP[0], False
    return pending


def _stop_requested_by_parent(signum, frame) -> None:
    """Rank 0's SIGUSR1 handler: the parent was interrupted; the first request stops after this epoch (with a
    checkpoint), a second one at once. A request before the loop starts is kept for it (raising here could land
    in set-up code that swallows it)."""
    if not STOP_TARGETS:
        if _PENDING_STOP[0]:
            raise KeyboardInterrupt("stopped by the parent process")
        _PENDING_STOP[0] = True
        return
    STOP_TARGETS[-1].request(frame)


def _exit_with_parent(poll_seconds: float = 1.0) -> None:
    """End this spawned process when its parent dies (killed with SIGKILL, or by a signal it could not pass on),
    instead of training on alone and then hanging on a pipe or a barrier nobody joins."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="softsym-parent-watch", daemon=True).start()


def _worker(rank: int, world_size: int, store_path: str, payload: dict, queue) -> None:
    """One spawned training process: join the gloo group, run the trainer's loop, rank 0 sends its result home."""
    import io
    import signal

    import torch.distributed as dist

    # Interrupts come from the parent only: a terminal's Ctrl-C reaches every process of the group, but a
    # scheduler's SIGTERM or `kill -INT` reaches the parent alone, so the parent forwards the request to rank 0
    # (SIGUSR1), which checkpoints and tells the others at the end of the epoch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if rank == 0 and hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _stop_requested_by_parent)
    _exit_with_parent()
    # the payload travels as bytes: tensors handed to a spawned process would otherwise be *shared* memory, and
    # every process would step the same parameters
    payload = torch.load(io.BytesIO(payload), weights_only=False)  # our own bytes, written by spawn_fit
    torch.set_num_threads(payload["threads"])
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world_size), rank=rank, world_size=world_size)
    try:
        _set_global_rng_state(payload["rng"])
        trainer = payload["trainer_cls"](payload["model"], payload["task"], payload["config"], tuner=payload["tuner"],
                                         strategy=TorchDistributed())
        result = trainer.fit()
        if rank == 0:
            buf = io.BytesIO()
            torch.save(result.model.state_dict(), buf)
            queue.put(("ok", {"state": buf.getvalue(), "metrics": result.metrics, "log": result.log,
                              "history": result.history, "run_dir": result.run_dir, "finished": result.finished}))
        dist.barrier()  # leave together: a process tearing gloo down while a peer still uses it can abort
    except KeyboardInterrupt as exc:
        if rank == 0:
            queue.put(("interrupted", str(exc)))
        try:  # a graceful stop reaches every rank at the same epoch: leave together (see the barrier above)
            import datetime

            dist.monitored_barrier(timeout=datetime.timedelta(seconds=10))
        except Exception:  # noqa: BLE001  (a peer already gone: nothing to wait for)
            pass
    except errors.SoftsymError as exc:
        queue.put(("error", type(exc).__name__, str(exc)))
        raise
    finally:
        dist.destroy_process_group()


class _ParentSignals:
    """In the parent of spawned training processes: SIGTERM raises KeyboardInterrupt like Ctrl-C (so it is
    forwarded to the processes instead of killing the parent alone), for the duration of the run."""

    def __enter__(self):
        import signal
        import threading

        self._previous = None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    @staticmethod
    def _handler(signum, frame):
        note_stop_signal(signum)
        raise KeyboardInterrupt("SIGTERM")

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def spawn_fit(trainer) -> dict:
    """Run ``trainer.fit()`` in ``trainer.config.world_size`` spawned local processes (gloo); rank 0's result.

    Returns {"state": model state_dict, "metrics", "log", "history", "run_dir", "finished"}. A SoftsymError
    raised in a process is raised here with its message; a Ctrl-C stops every process after the current epoch
    (rank 0 writes the checkpoint) and raises KeyboardInterrupt here; a second Ctrl-C stops them at once.
    """
    import io
    import os
    import signal
    import sys
    import tempfile
    import time

    import torch.distributed as dist
    import torch.multiprocessing as mp

    world = int(trainer.config.world_size)
    if not dist.is_available():
        raise ConfigError("torch.distributed is not available in this PyTorch build; train with world_size=1")
    if trainer.device.type != "cpu":
        raise ConfigError(f"TrainConfig(world_size={world}) spawns CPU processes (gloo); for GPUs launch one process "
                          "per device yourself (torchrun) and pass strategy=TorchDistributed()")
    payload = {"trainer_cls": type(trainer), "model": trainer.model, "task": trainer.task, "config": trainer.config,
               "tuner": trainer.tuner, "rng": _global_rng_state(), "threads": threads_per_process(world)}
    buf = io.BytesIO()
    try:
        torch.save(payload, buf)
    except Exception as exc:  # noqa: BLE001  (pickling errors come in many types)
        raise ConfigError(f"TrainConfig(world_size={world}) sends the model and task to new processes, but they "
                          f"cannot be pickled ({type(exc).__name__}: {exc}); define the model's classes and "
                          "functions at module level, or train with world_size=1") from None
    payload = buf.getvalue()
    messages: list = []
    with tempfile.TemporaryDirectory(prefix="softsym-ddp-") as tmp:
        store = os.path.join(tmp, "rendezvous")
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        procs = mp.start_processes(_worker, args=(world, store, payload, queue), nprocs=world, join=False,
                                   start_method="spawn")
        interrupted = False
        failure = None
        with _ParentSignals():
            while True:
                try:
                    while not queue.empty():  # drain as we go: a large result would block rank 0 in put()
                        messages.append(queue.get())
                    if procs.join(timeout=0.2):
                        break
                except KeyboardInterrupt:
                    if interrupted or not hasattr(signal, "SIGUSR1"):
                        for p in procs.processes:
                            if p.is_alive():
                                p.terminate()
                        raise
                    interrupted = True  # rank 0 checkpoints and stops every process after this epoch
                    sys.stderr.write("\ninterrupt: the training processes finish this epoch and save a checkpoint; "
                                     "interrupt again to stop now\n")
                    rank0 = procs.processes[0]
                    if rank0.is_alive():
                        os.kill(rank0.pid, signal.SIGUSR1)
                    time.sleep(0.05)
                except Exception as exc:  # noqa: BLE001  (ProcessRaisedException / ProcessExitedException)
                    failure = exc
                    break
        while not queue.empty():
            messages.append(queue.get())
    for m in messages:
        if m[0] == "error":
            raise remote_error(m[1], m[2])
    ok = [m[1] for m in messages if m[0] == "ok"]
    if not ok:  # stopped by an interrupt: the other processes may have failed as their peer left
        for m in messages:
            if m[0] == "interrupted":
                raise KeyboardInterrupt(m[1])
    if failure is not None and ok:  # rank 0 finished and reported; a crash while shutting down loses nothing
        import logging

        logging.getLogger(__name__).warning("a training process failed after the run finished (%s); using rank 0's "
                                            "result", str(failure).strip().splitlines()[-1] if str(failure) else failure)
        failure = None
    if failure is not None:
        raise errors.ModelError(f"a training process failed ({type(failure).__name__}): "
                                f"{str(failure).strip().splitlines()[-1] if str(failure).strip() else failure}")
    for m in messages:
        if m[0] == "interrupted":
            raise KeyboardInterrupt(m[1])
    if not ok:
        raise errors.ModelError("the training processes ended without a result (killed?); resume the run with "
                                "--resume if it has a run directory")
    out = ok[0]
    out["state"] = torch.load(io.BytesIO(out["state"]), weights_only=True)
    return out
