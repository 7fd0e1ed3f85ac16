"""Small rendering helpers shared by the pages: class names, the app's Plotly layout, a progress bar
for cached computations, and accuracies with their error (``pct_se``, ``paired``)."""
from __future__ import annotations

import contextlib
import math

import streamlit as st


CLASSES = {
    "fashion_mnist": ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"),
    "cifar10": ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

def markdown_table(rows: list[dict]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (the keys of the first row are the columns)."""
    if not rows:
        return ""
    def cell(v) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(fig, key: str) -> None:
    """``st.plotly_chart`` with the app's layout: the tool bar stands vertically at the right, so it
    never covers a title; titles start at the left."""
    fig.update_layout(modebar=dict(orientation="v"), title=dict(x=0.0, xanchor="left"))
    fig.update_layout(margin=dict(r=max(48, (fig.layout.margin.r or 0))))   # room for the vertical tool bar
    if fig.layout.legend.orientation is None:          # a legend left alone: above the plot, not under the tools
        has_title = bool(fig.layout.title.text)
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0),
                          margin=dict(t=max(fig.layout.margin.t or 0, 90 if has_title else 50)))
        if has_title:
            fig.update_layout(title=dict(y=0.99, yanchor="top"))
    st.plotly_chart(fig, width="stretch", key=key)

@contextlib.contextmanager
def progress_bar(text: str, quiet: bool = False):
    """A progress bar for the body of a ``st.cache_data`` function, as ``callback(done, total)``.

    Its block is created *inside* the cached function (a cached function may only write to blocks
    it created: Streamlit replays those messages on a cache hit) and is emptied at the end, so a
    replay shows nothing. ``quiet=True`` (the benchmark, outside a Streamlit run) draws nothing.
    """
    if quiet:
        yield None
        return
    holder = st.empty()
    bar = holder.progress(0.0, text=text)

    def update(done, total=None, *_):
        if total:
            bar.progress(min(1.0, float(done) / float(total)), text=f"{text} {done}/{total}")

    try:
        yield update
    finally:
        holder.empty()


def se_points(acc: float | None, n: int | None) -> float | None:
    """One binomial standard error, in points, of an accuracy ``acc`` (a fraction) on ``n`` images."""
    if acc is None or not n or acc != acc:
        return None
    return 100 * math.sqrt(max(acc * (1 - acc), 0.0) / n)


def pct_se(acc: float | None, n: int | None, digits: int = 1) -> str:
    """``"67.8 % ± 4.1"``: an accuracy (fraction) in percent with one binomial standard error on ``n``
    images; ``"—"`` when there is no number, no ± when ``n`` is unknown (said as "n?")."""
    if acc is None or acc != acc:
        return "—"
    se = se_points(acc, n)
    return f"{100 * acc:.{digits}f} % ± {se:.{digits}f}" if se is not None else f"{100 * acc:.{digits}f} % (n?)"


def paired(a, b, z: float = 1.96) -> dict:
    """Paired difference ``a − b`` of two models' per-image scores on the *same* images (0/1 or
    expected accuracies per image, sequences or tensors of equal length): ``rst.evaluation.per_image.
    paired_difference``'s dict (difference, se, ci_low, ci_high, n_images, significant) plus ``text``,
    e.g. ``"+1.6 points [−2.1, +5.3], 128 paired images"``."""
    import torch
    from rst.evaluation.per_image import paired_difference
    d = paired_difference(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), z=z)
    d["text"] = (f"{100 * d['difference']:+.1f} points [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}], "
                 f"{d['n_images']} paired images")
    return d


def job_panel(job, key: str) -> None:
    """Progress, queue position and Stop of a page's ``jobs.LiveJob``, polled twice a second while it
    runs; the whole page reruns when new partial results land (or the job ends), so it shows them."""
    seen_key = f"{key}_seen"

    @st.fragment(run_every=0.5 if job.running else None)
    def panel():
        version = (id(job.partial), job.running)
        if st.session_state.get(seen_key) not in (None, version):
            st.session_state[seen_key] = version
            st.rerun()
        st.session_state[seen_key] = version
        if job.running:
            pos = job.queue_position()
            c1, c2 = st.columns([5, 1])
            c1.progress(job.fraction_done(), text=f"waiting for the CPU: position {pos} in the queue" if pos
                        else job.text)
            if c2.button("Stop", key=key):
                job.stop()
                job.join(1.0)
                st.rerun()
        elif job.error:
            st.error(f"The computation failed: {job.error}")
        elif job.stopped:
            st.warning("Stopped: what is shown was computed before Stop.")
    panel()
