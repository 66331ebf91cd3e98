"""Train page (not built yet)."""

import streamlit as st

st.title("Train")
st.info("This page is not available yet: it arrives with its own issue. Explore the data meanwhile.")
