"""Predict page (not built yet)."""

import streamlit as st

st.title("Predict")
st.info("This page is not available yet: it arrives with its own issue. Explore the data meanwhile.")
