"""The app's former entry, kept so that ``streamlit run app/main.py`` still works: it runs
``app/streamlit_app.py`` (the app; ``streamlit run app`` starts that file) on every script run."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("streamlit_app.py")), run_name="__main__")
