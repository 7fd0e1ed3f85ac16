"""The app's former entry, kept so that ``streamlit run app/main.py`` still works: it runs
``app/explorer.py`` (the app's script; ``streamlit run app`` serves it through ``streamlit_app.py``)
on every script run."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("explorer.py")), run_name="__main__")
