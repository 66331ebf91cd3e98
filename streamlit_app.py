"""UTKFace multi-task lab: the entry point (`streamlit run streamlit_app.py`); the shell is pages.shared.run_app."""

from pages.shared import run_app

run_app()
