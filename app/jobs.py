"""Background work of the app: the live search (``rst.search.loop.run_search`` in a thread, and the data it
searches on), and the pages' live computations (``LiveJob``: one per session, chunks of CPU work taken
from one pool shared by every session, ``POOL``, with a visible queue position)."""
from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from store import cached_subset, file_mtime, subset_path, train_split


@dataclass
class SearchJob:
    """``rst.search.loop.run_search`` in a daemon thread; the page polls it (``st.fragment(run_every=)``).

    ``stop()`` sets an event that ``run_search``'s ``should_stop`` reads after every optimiser step:
    the search ends its epoch at once (validation of the partial epoch, best state restored) and
    returns a ticket with ``stopped=True``.
    """
    cfg: Any
    data: Any
    device: str
    data_label: str = ""
    steps: list = field(default_factory=list)          # step events
    epochs: list = field(default_factory=list)         # epoch events
    result: Any = None
    error: str | None = None
    error_trace: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rst-search-{self.id}", daemon=True)

    def start(self) -> "SearchJob":
        self._thread.start()
        return self

    def _run(self) -> None:
        from rst.search.loop import run_search
        if not POOL.acquire(self.id, self._stop.is_set):     # the CPU pool every session shares
            self.error, self.finished = "stopped while waiting for the CPU", time.time()
            return
        try:
            self.result = run_search(self.cfg, device=self.device, data=self.data, progress=self._on_event,
                                     should_stop=self._stop.is_set)
        except Exception as e:   # noqa: BLE001 - reported to the user on the page, with the traceback
            self.error = f"{type(e).__name__}: {e}"
            self.error_trace = traceback.format_exc()
        finally:
            POOL.release(self.id)
            self.finished = time.time()

    def queue_position(self) -> int:
        """0: running (or done); n >= 1: n-th in line for the shared CPU pool."""
        return POOL.position(self.id)

    def _on_event(self, event: dict) -> None:
        (self.steps if event["event"] == "step" else self.epochs).append(dict(event))

    def stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def fraction_done(self) -> float:
        if self.finished is not None and self.error is None:
            return 1.0
        if not self.steps:
            return 0.0
        e = self.steps[-1]
        return min(1.0, (e["epoch"] * e["steps"] + e["step"]) / max(1, e["epochs"] * e["steps"]))


def search_data(source: str, cfg, n_train: int):
    """``SearchData`` for a live search: ``"synthetic"``, ``"subset"`` (the shipped *test* subset, a
    demo only) or ``"train"`` (the data set's training split on disk). Returns (data, label)."""
    from rst.data.datasets import split_train_val, synthetic_dataset
    from rst.search.loop import SearchData
    spec = cfg.network_spec()
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    if source == "synthetic":
        x, y = synthetic_dataset(n_train + cfg.val_size, shape=shape, num_classes=spec.num_classes, seed=cfg.seed)
        label = f"synthetic data ({n_train} train + {cfg.val_size} validation images)"
    elif source == "subset":
        path = subset_path()
        mtime = file_mtime(path)
        if mtime is None:
            raise FileNotFoundError(f"no test subset at {path}")
        try:
            x, y, meta = cached_subset(str(path), mtime)
        except ValueError as e:
            raise FileNotFoundError(f"the test subset {path} cannot be read: {e}") from None
        x, y = x[:n_train + cfg.val_size], y[:n_train + cfg.val_size]
        label = (f"the shipped test subset ({meta.get('dataset')}, {len(y)} images) — a demo: the other pages "
                 "evaluate on these same images")
    else:
        x, y = train_split(cfg.dataset)
        x, y = x[:n_train + cfg.val_size], y[:n_train + cfg.val_size]
        label = f"{cfg.dataset} training split ({len(y)} images)"
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"the data's images are {tuple(x.shape[1:])}, the network expects {shape}: "
                         "pick a network of this data set's geometry")
    val = min(cfg.val_size, max(1, len(y) // 5))
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, val, seed=cfg.seed)
    return SearchData(x_tr, y_tr, x_val, y_val), label


def result_summary(res) -> str:
    """The page's one-line summary of a finished search (epochs counted from 1, as the chart counts them);
    it says when the best epoch is one the Stop button cut short."""
    best = next((h for h in res.history if h["epoch"] == res.best_epoch), {})
    n_complete = sum(bool(h.get("complete", True)) for h in res.history)
    text = (f"Ticket **{res.ticket.name}** found{' (stopped early)' if res.stopped else ''}: best epoch "
            f"{res.best_epoch + 1} of {len(res.history)} run"
            + (f" ({n_complete} complete)" if n_complete < len(res.history) else "") + ".")
    if not best.get("complete", True):
        text += (f" Epoch {res.best_epoch + 1} was stopped part-way: its numbers are of a partly trained "
                 "epoch (validated after the last step it ran).")
    return text


# --------------------------------------------------------------------------------------------
# the live computations of the pages: one background job per session, one CPU pool for all
# --------------------------------------------------------------------------------------------

K_LIVE = "live_job"          # session-state key of the session's LiveJob (one at a time)


class JobStopped(Exception):
    """Raised inside a job's computation when its Stop was pressed (by the forward hook below)."""


class CpuPool:
    """A bounded FIFO pool of CPU work shared by every session of the process: ``slots`` computations
    run at once (default 1: torch already spreads one over every core), the others wait in line and
    can read their position. A job takes a slot per chunk of work, so two users alternate chunks."""

    def __init__(self, slots: int = 1):
        self.slots = max(1, int(slots))
        self._cond = threading.Condition()
        self._queue: list[str] = []        # waiting job ids, first come first served
        self._running: set[str] = set()

    def position(self, job_id: str) -> int:
        """0: running or not waiting; n >= 1: n-th in line."""
        with self._cond:
            return self._queue.index(job_id) + 1 if job_id in self._queue else 0

    def acquire(self, job_id: str, should_stop=lambda: False) -> bool:
        """Wait for a slot (False if ``should_stop()`` became true while waiting)."""
        with self._cond:
            self._queue.append(job_id)
            try:
                while not (self._queue[0] == job_id and len(self._running) < self.slots):
                    if should_stop():
                        return False
                    self._cond.wait(0.1)
                self._running.add(job_id)
                return True
            finally:
                self._queue.remove(job_id)
                self._cond.notify_all()

    def release(self, job_id: str) -> None:
        with self._cond:
            self._running.discard(job_id)
            self._last_release = time.monotonic()
            self._cond.notify_all()

    def busy_recently(self, seconds: float = 60.0) -> bool:
        """Whether this pool ran work within ``seconds`` (its share is then in the load average)."""
        return time.monotonic() - getattr(self, "_last_release", -1e9) < seconds


def cores_busy(window: float = 0.1) -> float | None:
    """How many cores other work keeps busy now: the non-idle share of all CPUs over ``window`` seconds
    (``/proc/stat``), times the core count; None where there is no ``/proc/stat``. Measured between
    chunks, while this process's chunk threads wait for the pool, so it counts the others."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]                                        # all jiffies, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def torch_threads(cores: int | None = None, load: float | None = None, mine: int = 0,
                  busy: float | None = None) -> int:
    """Torch threads for the next chunk: the cores the rest of the machine leaves free, at least 1.
    "The rest" is ``busy`` (cores in use now, :func:`cores_busy`) where it is measured, else the
    1-minute load average less ``mine``, this process's own recent share. The load average lags by a
    minute: on this VM it read about 1 on idle CPUs after a run, which gave a chunk one thread and
    made the R2S default 11-13 s instead of 8.6-9.2 s. On a busy 2-core machine two OpenMP threads
    that must wait for each other ran an R2S chunk 10x slower than one thread (39.4 s vs 3.2 s, bf16,
    load 7; docs/app-speed.md), so a busy machine gets one."""
    cores = cores or os.cpu_count() or 1
    if busy is not None:
        others = busy
    else:
        load = os.getloadavg()[0] if load is None else load
        others = max(0.0, load - mine)
    return max(1, min(cores, int(cores - others + 0.5)))


POOL = CpuPool()             # the process's one pool (every session shares it)
_LOCAL = threading.local()   # the LiveJob whose thread this is (read by the forward hook)
_HOOK: list = []


def _stop_hook(module, args):
    job = getattr(_LOCAL, "job", None)
    if job is not None and job.stop_requested:
        raise JobStopped()


def _install_stop_hook() -> None:
    """One global forward pre-hook: a forward in a stopped job's thread raises JobStopped, so Stop ends
    any rst computation (attacks, curves, matrices) within one forward, whatever its batch size."""
    if not _HOOK:
        import torch
        _HOOK.append(torch.nn.modules.module.register_module_forward_pre_hook(_stop_hook))


def two_lanes(here, there):
    """``here()`` in this thread and ``there()`` in a helper thread at once, each on half of this
    thread's torch threads (at least one); returns both results, and raises what either raised once both have ended. On this 2-core CPU the
    default zoo's attack steps scale 1.2-1.9x from one OpenMP thread to two, depending on the day; two
    one-thread lanes never did less, and the R2S live default took 10.8/11.6/11.8 s against
    11.7/12.2/12.7 s on one two-thread lane (interleaved runs). The helper runs as this thread's
    LiveJob, so Stop ends it at its next forward pass like this one."""
    import torch
    job, threads, box = getattr(_LOCAL, "job", None), torch.get_num_threads(), {}
    theirs = max(1, threads // 2)

    def run():
        _LOCAL.job = job
        torch.set_num_threads(theirs)
        try:
            box["value"] = there()
        except BaseException as e:          # noqa: BLE001 - raised again in the calling thread
            box["error"] = e
        finally:
            _LOCAL.job = None

    helper = threading.Thread(target=run, name="rst-lane", daemon=True)
    torch.set_num_threads(max(1, threads - theirs))
    helper.start()
    try:
        mine = here()
    finally:
        helper.join()
        torch.set_num_threads(threads)
    if "error" in box:
        raise box["error"]
    return mine, box["value"]


class LiveJob:
    """A page's live computation in a daemon thread: ``fn(job)`` does the work, calling
    ``job.progress(done, total, text)``, ``job.publish(partial)`` (what the page shows so far) and
    ``with job.cpu():`` around each chunk of CPU work (the shared pool). ``stop()`` ends it within one
    forward pass; what was published stays (``job.partial``), ``job.stopped`` says so."""

    def __init__(self, kind: str, params: dict, fn, pool: CpuPool = POOL):
        self.kind, self.params, self._fn, self._pool = kind, params, fn, pool
        self.id = uuid.uuid4().hex[:8]
        self.partial: Any = None
        self.done, self.total, self.text = 0, 1, "waiting"
        self.error: str | None = None
        self.error_trace: str | None = None
        self.stopped = False
        self.started = time.time()
        self.first_partial_s: float | None = None
        self.finished: float | None = None
        self.stop_time: float | None = None       # when stop() was first called
        self._stop = threading.Event()
        self._busy: tuple[float, float | None] | None = None     # (when, cores_busy()) last measured
        self._thread = threading.Thread(target=self._run, name=f"rst-{kind}-{self.id}", daemon=True)

    def start(self) -> "LiveJob":
        _install_stop_hook()
        self._thread.start()
        return self

    def _run(self) -> None:
        _LOCAL.job = self
        try:
            self._fn(self)
        except JobStopped:
            self.stopped = True
        except Exception as e:   # noqa: BLE001 - reported to the user on the page in one line
            self.error = f"{type(e).__name__}: {e}"
            self.error_trace = traceback.format_exc()
        finally:
            _LOCAL.job = None
            self.stopped = self.stopped or self._stop.is_set()
            self.finished = time.time()

    @contextlib.contextmanager
    def cpu(self):
        """A slot of the shared pool for the block (raises JobStopped if stopped while waiting)."""
        if not self._pool.acquire(self.id, self._stop.is_set):
            raise JobStopped()
        if self.params.get("threads", "auto") == "auto":
            import torch
            torch.set_num_threads(torch_threads(mine=torch.get_num_threads() if self._pool.busy_recently() else 0,
                                                busy=self._others_busy()))
        try:
            yield
        finally:
            self._pool.release(self.id)

    def _others_busy(self, max_age: float = 5.0) -> float | None:
        """:func:`cores_busy`, measured again only when the last measure is over ``max_age`` s old: its
        0.1 s sample would otherwise be added to every chunk (about 2 s each for R2S live)."""
        now = time.monotonic()
        if self._busy is None or now - self._busy[0] > max_age:
            self._busy = (now, cores_busy())
        return self._busy[1]

    def progress(self, done: int, total: int, text: str = "") -> None:
        self.done, self.total, self.text = int(done), max(1, int(total)), text or self.text
        if self._stop.is_set():
            raise JobStopped()

    def publish(self, partial: Any) -> None:
        if self.first_partial_s is None:
            self.first_partial_s = time.time() - self.started
        self.partial = partial

    def queue_position(self) -> int:
        return self._pool.position(self.id)

    def stop(self) -> None:
        if not self._stop.is_set():
            self.stop_time = time.time()
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def fraction_done(self) -> float:
        return 1.0 if (self.finished and not self.error and not self.stopped) else min(1.0, self.done / self.total)


def start_live(session_state, kind: str, params: dict, fn) -> tuple["LiveJob | None", str | None]:
    """Start ``fn`` as this session's live job: ``(job, None)``, or ``(None, message)`` when a job of
    the same ``kind`` is still running (a second start is refused; Stop it first). A running job of
    another kind, or this session's running search, is stopped first: one computation per session."""
    old = session_state.get(K_LIVE)
    if old is not None and old.running and old.kind == kind:
        return None, "A computation is already running on this page: press Stop first, or wait for it to end."
    cancelled = []
    for key in (K_LIVE, "search_job"):
        other = session_state.get(key)
        if other is not None and other.running:
            other.stop()
            cancelled.append(other)
    for other in cancelled:          # cleanly: the old thread is out of the models before the new one starts
        other.join(2.0)
    job = LiveJob(kind, params, fn).start()
    session_state[K_LIVE] = job
    return job, None


def live_job(session_state, kind: str) -> "LiveJob | None":
    """This session's live job of ``kind`` (running or finished), else None."""
    job = session_state.get(K_LIVE)
    return job if job is not None and job.kind == kind else None
