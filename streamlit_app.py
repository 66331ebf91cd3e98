"""UTKFace multi-task lab: page config, the shared data sidebar, and navigation."""

import streamlit as st

from pages.shared import data_sidebar, keep_keras_state, leave_legacy_pages_mode

keep_keras_state()
leave_legacy_pages_mode()
st.set_page_config(page_title="UTKFace multi-task lab", page_icon=":material/face:", layout="wide")

pages = [
    st.Page("pages/explore.py", title="Explore", icon=":material/search:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/photo_camera:"),
]
data_sidebar()
page = st.navigation(pages)
st.session_state["_shell"] = True
page.run()
