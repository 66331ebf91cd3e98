"""Streamlit pages (thin scripts) and the UI helpers they share."""
