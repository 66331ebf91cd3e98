"""Evaluate page (not built yet)."""

import streamlit as st

from pages.shared import ensure_shell

ensure_shell()
st.title("Evaluate")
st.info("This page is not available yet: it arrives with its own issue. Explore the data meanwhile.")
