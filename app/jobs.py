"""The live search: ``rst.search.run_search`` in a background thread, and the data it searches on."""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from store import cached_subset, file_mtime, subset_path, train_split


@dataclass
class SearchJob:
    """``rst.search.run_search`` in a daemon thread; the page polls it (``st.fragment(run_every=)``).

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
        from rst.search import run_search
        try:
            self.result = run_search(self.cfg, device=self.device, data=self.data, progress=self._on_event,
                                     should_stop=self._stop.is_set)
        except Exception as e:   # noqa: BLE001 - reported to the user on the page, with the traceback
            self.error = f"{type(e).__name__}: {e}"
            self.error_trace = traceback.format_exc()
        finally:
            self.finished = time.time()

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
    from rst.data import split_train_val, synthetic_dataset
    from rst.search import SearchData
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
