"""Where and how torch runs: devices, private generators, threads, memory.

Nothing here knows about estimators; each function takes what it needs.
"""

import contextlib
import functools
import math
import multiprocessing
import os
import sys
import threading

import numpy as np
import torch
from sklearn.utils import check_random_state
from threadpoolctl import ThreadpoolController

__all__ = ["available_memory", "cpu_threads", "deterministic_kernels", "draw_seed", "idle_cores",
           "make_generator", "refuse_beyond_memory", "resolve_device", "thread_limit", "watched"]

#: Multiply-adds per training step (or per inference chunk) from which skebm
#: uses more than one torch thread: below it a second thread costs more in
#: synchronisation than it saves (``benchmarks/threads.py``, RESULTS.md).
PARALLEL_WORK = 20_000_000


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device``.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise. An
    explicit device this machine cannot use (``"cuda"`` without a GPU,
    ``"mps"`` off Apple silicon, a typo) is a ``ValueError``, not a silent
    fall-back.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch knows.") from exc
    if resolved.type == "cpu":
        return resolved
    try:  # each backend says in its own way that it is missing; ask it for a tensor
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        torch.empty(0, device=resolved)
        torch.Generator(device=resolved)
    except (RuntimeError, AssertionError, AttributeError) as exc:
        raise ValueError(
            f"device={device!r} was asked for, but torch {torch.__version__} cannot use "
            f"{resolved.type.upper()} on this machine. Use device='auto' or 'cpu'."
        ) from exc
    return resolved


def make_generator(random_state, device):
    """A private ``torch.Generator`` on ``device``, seeded from ``random_state``.

    ``random_state`` follows scikit-learn's convention: None, an int or a
    ``numpy.random.RandomState``. The global torch seed is never touched.
    """
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def draw_seed(generator):
    """An int drawn from ``generator``, to seed a later, separate stream."""
    return int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def thread_limit(n_threads):
    """Run the block with ``n_threads`` torch threads and as many threads in
    every BLAS and OpenMP pool of the process (numpy's OpenBLAS inside
    scikit-learn's EM, say), then restore them all. Threads that wait
    actively, as these do, slow each other down on a core another process
    keeps busy. ``n_threads=None`` leaves them alone.

    The counts are the process's, so blocks that overlap in several threads
    (fits in a thread pool) take turns setting them; whatever the order in
    which they end, the counts go back to what they were before the first.
    """
    if n_threads is None:
        yield
        return
    with _LIMITS_LOCK:
        entry = [_thread_counts()]  # the counts to restore when this block ends
        _LIMITS.append(entry)
        _set_thread_counts(n_threads, [n_threads] * len(entry[0][1]))
    try:
        yield
    finally:
        with _LIMITS_LOCK:
            position = next(i for i, other in enumerate(_LIMITS) if other is entry)
            if position == len(_LIMITS) - 1:
                _set_thread_counts(*entry[0])
            else:  # a later block still runs: it restores, when it ends, what this one found
                _LIMITS[position + 1][0] = entry[0]
            del _LIMITS[position]


#: The thread_limit blocks running, oldest first, each with the counts it found.
_LIMITS, _LIMITS_LOCK = [], threading.Lock()


@contextlib.contextmanager
def deterministic_kernels(device):
    """Run the block on ``device`` with cuDNN's deterministic algorithms (on
    CUDA; elsewhere nothing changes), then restore the settings: its fastest
    convolutions add partial sums in a varying order, and the same seed must
    give the same model. The settings are the process's, so blocks that
    overlap in several threads share them: the first to start sets them, and
    the last to end restores what the first found, in whatever order they end.
    """
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with _KERNELS_LOCK:
        if _KERNELS["blocks"] == 0:
            _KERNELS["found"] = cudnn.deterministic, cudnn.benchmark
            cudnn.deterministic, cudnn.benchmark = True, False
        _KERNELS["blocks"] += 1
    try:
        yield
    finally:
        with _KERNELS_LOCK:
            _KERNELS["blocks"] -= 1
            if _KERNELS["blocks"] == 0:
                cudnn.deterministic, cudnn.benchmark = _KERNELS["found"]


#: The deterministic_kernels blocks running, and the settings the first found.
_KERNELS, _KERNELS_LOCK = {"blocks": 0, "found": None}, threading.Lock()


def _thread_counts():
    """(torch threads, threads of each BLAS and OpenMP pool)."""
    return torch.get_num_threads(), [pool.num_threads for pool in _thread_pools().lib_controllers]


def _set_thread_counts(n_torch, n_pools):
    torch.set_num_threads(n_torch)
    for pool, n in zip(_thread_pools().lib_controllers, n_pools):
        pool.set_num_threads(n)


@functools.cache
def _thread_pools():
    """The process's BLAS and OpenMP pools, found once: finding them scans
    every loaded library, work that need not be redone at each call."""
    return ThreadpoolController()


def cpu_threads(n_threads, multiply_adds, device):
    """torch intra-op threads for work of this size; None off the CPU.

    - ``n_threads`` (the estimator's parameter), when set, decides;
    - never more threads than torch has at the call, the limit that
      ``OMP_NUM_THREADS``, ``threadpoolctl`` or a joblib/dask worker sets;
    - one thread for work under :data:`PARALLEL_WORK` multiply-adds;
    - otherwise the idle cores: torch's threads wait actively for each
      other, so a thread on a core another process keeps busy slows every
      step down.
    """
    if device.type != "cpu":
        return None
    if n_threads is not None:
        return n_threads
    allowed = torch.get_num_threads()
    if allowed <= 1 or multiply_adds < PARALLEL_WORK:
        return 1
    return max(1, min(allowed, idle_cores()))


def idle_cores():
    """Cores of this process not busy with other processes' work at this moment.

    The cores the process may run on, less the tasks the kernel has running
    (``/proc/loadavg``) that are not this process's own threads (torch's
    worker threads spin for a while after each parallel region and must not
    count as a neighbour). Linux; elsewhere, or when ``/proc`` cannot be
    read, every core counts as idle.
    """
    n_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_cores = n_cores or 1
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        tasks = os.listdir("/proc/self/task")
    except (OSError, ValueError, IndexError):
        return n_cores
    own = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                own += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):  # the thread ended meanwhile
            continue
    return max(1, n_cores - max(0, running - max(own, 1)))


def watched():
    """Whether a person is likely watching this call: the main thread of the
    main process (not a worker of GridSearchCV's ``n_jobs``, a thread pool or
    dask) writing to a terminal or a notebook (not a log file or pytest)."""
    if multiprocessing.parent_process() is not None:
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def available_memory(device):
    """Bytes free on ``device``: the GPU's free memory, or the CPU's
    ``MemAvailable`` (Linux; elsewhere, the physical memory, or no limit
    when the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return math.inf


#: Part of the free memory one request may plan to use.
MEMORY_SHARE = 0.5


def refuse_beyond_memory(needed, what, advice, device=torch.device("cpu")):
    """A ``ValueError`` before allocating when ``needed`` bytes (for ``what``)
    exceed :data:`MEMORY_SHARE` of the memory free on ``device``; ``advice``
    says what to change."""
    free = available_memory(device)
    if needed > MEMORY_SHARE * free:
        raise ValueError(f"{what} would need about {needed / 2**30:.1f} GiB, more than the "
                         f"{free / 2**30:.1f} GiB free on {device}. {advice}")
