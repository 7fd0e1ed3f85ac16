"""``streamlit run app``: Streamlit's folder entry. It serves the app's script, ``explorer.py``, as an
``st.App`` whose lifespan starts the warm-up (torch, ``rst``, the default set: ``state.warm_up``) when
the server starts, before any browser connects: the first page never needs them, the next one finds
them ready (docs/app-speed.md). ``streamlit run app/main.py`` serves the same script without it.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))


@contextlib.asynccontextmanager
async def lifespan(_app):
    import state
    state.warm_up()
    yield


app = st.App("explorer.py", lifespan=lifespan)
