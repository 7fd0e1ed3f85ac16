"""The front end's chart, table and input code, loaded while the first page is read.

Streamlit's front end fetches each element's code the first time a page shows that element: the
Plotly chart alone is a 4.7 MB script, which the first page with a chart paid for (about a second
on this CPU) after navigation. Home shows none of them (so that it renders fast), then asks the
browser to import them when it is idle: the next page finds them loaded (docs/app-speed.md). The
chunks' names carry a content hash, so they are read off the installed Streamlit; a name not found
is skipped and that page loads its chunk as before.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import streamlit as st

CHUNKS = ("PlotlyChart", "DataFrame", "NumberInput", "Slider")   # what the other pages show first


@functools.cache
def chunk_files() -> tuple[str, ...]:
    """The installed front end's file for each of :data:`CHUNKS` (one match each, else skipped)."""
    js = Path(st.__file__).parent / "static" / "static" / "js"
    out = []
    for stem in CHUNKS:
        hits = sorted(js.glob(f"{stem}.*.js"))
        if len(hits) == 1:
            out.append(hits[0].name)
    return tuple(out)


def preload_script(files: tuple[str, ...]) -> str:
    """A script that imports ``files`` from the folder of the front end's own entry script, once the
    browser is idle: the same URLs the front end imports them from, so they load once."""
    return ("<script>(() => {"
            "const entry = document.querySelector('script[type=\"module\"][src*=\"static/js/index.\"]');"
            "const base = entry ? new URL('.', entry.src) : new URL('static/js/', document.baseURI);"
            f"const go = () => {json.dumps(list(files))}.forEach(f => import(new URL(f, base).href)"
            ".catch(e => (window.__rstPreloadErrors = window.__rstPreloadErrors || []).push(f + ': ' + e)));"
            "(window.requestIdleCallback ? requestIdleCallback(go, {timeout: 1000}) : setTimeout(go, 200));"
            "})();</script>")


def preload_front_end() -> None:
    """Ask the browser to load the other pages' element code in the background (nothing when none is found)."""
    files = chunk_files()
    if files:
        st.html(preload_script(files), unsafe_allow_javascript=True)
