"""Small rendering helpers shared by the pages: class names, the app's Plotly layout, a progress bar
for cached computations."""
from __future__ import annotations

import contextlib

import streamlit as st


CLASSES = {
    "fashion_mnist": ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"),
    "cifar10": ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

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
