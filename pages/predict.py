"""Predict: age, gender and race of the faces in uploaded photos or a camera shot; Grad-CAM; batch CSV; downloads."""

import streamlit as st

from pages.shared import (
    MAX_UPLOAD_MB,
    ensure_shell,
    job_progress,
    link_widgets,
    model_mtime,
    model_runs,
    no_runs_message,
    pick_run,
    upload_problem,
)
from utkface_core.data.imagecache import ImageDecodeError
from utkface_core.inference import export, gradcam, prediction
from utkface_core.jobs import registry
from utkface_core.workflow import start_batch_prediction

ensure_shell()
st.title("Predict age, gender and race")

all_runs = model_runs()
if not all_runs:
    no_runs_message("Prediction")

top_left, top_right = st.columns([3, 2])
run = pick_run(top_left, "run", "Model (training run)", all_runs)
model_path = run.model_path
model_key = f"{model_path}:{model_mtime(run)}"
image_size = int(run.config.get("image_size", 64))
age_mae = (run.metrics or {}).get("age_mae")
if (run.config.get("data") or {}).get("source") == "demo":
    st.warning(
        "This model was trained on the **synthetic demo set**: its predictions on real faces are meaningless. "
        "Train on a UTKFace folder for real predictions.",
        icon=":material/science:",
    )
no_detect = top_right.toggle(
    "Images are already cropped faces (skip detection)",
    value=False,
    key="predict_no_detect",
    bind="query-params",
    help="UTKFace crops and other tight face crops: the centre square is used as the face.",
)
# Not in the link: a shared link should not open the visitor's camera.
camera_on = top_right.toggle(
    "Use the camera", value=False, key="predict_camera_on", help="Opens your camera for one photo."
)


@st.cache_resource(max_entries=4, show_spinner=False)
def load_model(key: str):
    """The run's Keras model, once per file version (``key`` holds its path and modification time)."""
    return prediction.load_model_cached(key.rsplit(":", 1)[0])


try:
    with st.spinner(f"Loading the model of {run.name}…"):
        model = load_model(model_key)
except ValueError as exc:
    st.error(f"The model of {run.name} cannot be used: {exc}")
    st.stop()


def predict_bytes(key: str, data: bytes, detect: bool, size: int, mae: float | None) -> prediction.ImageResult:
    """Predict one encoded image through the core's bounded cache (thumbnails and face crops, LRU byte budget, TTL)."""
    return prediction.predict_bytes_cached(
        load_model(key), data, model_key=key, image_size=size, detect=detect, age_mae=mae
    )


@st.cache_data(max_entries=2, show_spinner=False)
def keras_bytes(key: str) -> bytes:
    """The run's model.keras file for download (``key`` holds its path and modification time)."""
    return export.model_bytes(key.rsplit(":", 1)[0])


@st.cache_data(max_entries=4, show_spinner=False)
def exported(key: str, fmt: str) -> export.ExportResult:
    """The run's model as ONNX or TFLite, checked against Keras (``key`` holds its path and modification time)."""
    return export.export_model(key.rsplit(":", 1)[0], fmt)


@st.cache_data(max_entries=128, show_spinner=False)
def cam_overlay(key: str, crop, head: str):
    """Grad-CAM of one aligned face for one head, blended over the face."""
    heat = gradcam.grad_cam(load_model(key), crop, head)
    return gradcam.overlay_heatmap(crop, heat)


def probability_bars(probs: dict[str, float], title: str) -> None:
    st.markdown(f"**{title}**")
    for name, p in sorted(probs.items(), key=lambda item: -item[1]):
        st.progress(float(p), text=f"{name} · {p:.0%}")


def face_panel(face: prediction.FacePrediction, image_no: int, cam_head: str) -> None:
    with st.container(border=True):
        crop_col, age_col, gender_col, race_col = st.columns([1.1, 1, 1.3, 1.5])
        crop_col.image(face.crop, caption=f"Face {face.index} (aligned)", width="stretch")
        age_col.metric(
            f"Face {face.index} · age",
            f"{face.age:.0f}",
            help="Mean of the face and its mirror image. The range adds the run's held-out MAE; "
            "it is a typical-error band, not a calibrated interval.",
        )
        age_col.caption(f"range {face.age_low:.0f}–{face.age_high:.0f} years")
        if face.confidence is not None:
            age_col.caption(f"detector confidence {face.confidence:.0%}")
        with gender_col:
            probability_bars(face.gender_probs, "Gender")
        with race_col:
            probability_bars(face.race_probs, "Race")
        expander = st.expander(
            f"Grad-CAM: what drove the {cam_head} prediction of face {face.index}",
            key=f"predict_cam_{image_no}_{face.index}",
            on_change="rerun",
            icon=":material/visibility:",
        )
        with expander:
            if expander.open:
                try:
                    overlay = cam_overlay(model_key, face.crop, cam_head)
                except ValueError as exc:
                    st.error(f"Grad-CAM is not available for this model: {exc}")
                else:
                    st.image([face.crop, overlay], caption=["face", f"Grad-CAM ({cam_head})"], width=200)
                    st.caption("Red areas raised the score of the predicted value most; blue areas barely mattered.")


def show_image(name: str, data: bytes, image_no: int, cam_head: str) -> None:
    with st.container(border=True):
        st.markdown(f"#### {image_no}. {name}")
        problem = upload_problem(name, len(data))
        if problem:
            st.error(problem, icon=":material/error:")
            return
        try:
            with st.spinner("Finding and reading faces…"):
                result = predict_bytes(model_key, data, not no_detect, image_size, age_mae)
        except ImageDecodeError as exc:
            st.error(f"{name} cannot be read: {exc.reason}. Upload a JPEG, PNG or WebP photo.", icon=":material/error:")
            return
        except ValueError as exc:
            st.error(f"{name} cannot be used: {exc}", icon=":material/error:")
            return
        if not result.faces:
            st.warning(prediction.NO_FACE_MESSAGE + ".", icon=":material/face_retouching_off:")
            st.image(result.image_rgb, width=320)
            return
        boxed = prediction.draw_boxes(result.image_rgb, result.faces)
        left, right = st.columns([2, 5])
        left.image(
            boxed,
            caption=f"{len(result.faces)} face(s) found" if not no_detect else "whole image used as the face",
            width="stretch",
        )
        with right:
            for face in result.faces:
                face_panel(face, image_no, cam_head)


tab_photos, tab_batch, tab_model = st.tabs(
    ["Photos", "Batch → CSV", "Download the model"], default="Photos", key="predict_tab", bind="query-params"
)
link_widgets("predict_no_detect", "predict_tab")

with tab_photos:
    uploads = st.file_uploader(
        "Photos (JPEG, PNG or WebP)",
        type=["jpg", "jpeg", "png", "webp"],
        accept_multiple_files=True,
        key="predict_upload",
        max_upload_size=MAX_UPLOAD_MB,
        help="Each photo is checked for faces; every face gets its own prediction.",
    )
    inputs = [(u.name, u.getvalue()) for u in uploads or []]
    if camera_on:
        shot = st.camera_input("Take a photo", key="predict_camera")
        if shot is not None:
            inputs.append(("camera photo", shot.getvalue()))
    if not inputs:
        st.info(
            "Upload one or more photos"
            + (" or take one with the camera" if camera_on else "")
            + ". Images are only kept in memory while you use this page.",
            icon=":material/upload:",
        )
    else:
        cam_head = st.segmented_control(
            "Grad-CAM explains",
            list(gradcam.HEADS),
            key="predict_cam_head",
            default="age",
            required=True,
            persist_state="session",
        )
        for number, (name, data) in enumerate(inputs, start=1):
            show_image(name, data, number, cam_head or "age")

with tab_batch:
    st.caption(
        "Many photos, or a .zip / .tar / .tar.gz archive of them: one CSV row per face, with an error "
        "column for files that could not be read or had no face. Uses the detection setting above."
    )
    batch = st.file_uploader(
        "Photos or an archive",
        type=["jpg", "jpeg", "png", "webp", "zip", "tar", "gz", "tgz"],
        accept_multiple_files=True,
        key="predict_batch",
        max_upload_size=1024,
    )
    job = registry().get(st.session_state.get("predict_batch_job"))
    busy = job is not None and job.active
    if st.button(
        "Predict all",
        key="predict_batch_start",
        type="primary",
        disabled=not batch or busy,
        icon=":material/play_arrow:",
    ):
        job = start_batch_prediction(
            model,
            [(upload.name, upload.getvalue()) for upload in batch],
            run_name=run.name,
            image_size=image_size,
            detect=not no_detect,
            age_mae=age_mae,
        )
        st.session_state["predict_batch_job"] = job.id
        busy = True

    @st.fragment(run_every=0.5 if busy else None)
    def batch_panel() -> None:
        current = registry().get(st.session_state.get("predict_batch_job"))
        if current is None:
            return
        job_progress(current)
        if current.state == "completed":
            frame = current.result
            faces = int(frame["error"].isna().sum())
            st.success(
                f"{faces:,} face(s) predicted; {int(frame['error'].notna().sum()):,} file(s) with an error or no face."
            )
            st.dataframe(frame, key="predict_batch_table", hide_index=True)
            st.download_button(
                "Download the CSV",
                frame.to_csv(index=False),
                file_name=f"predictions-{run.name}.csv",
                mime="text/csv",
                key="predict_batch_download",
                icon=":material/download:",
                on_click="ignore",
            )
        if busy and not current.active:
            st.rerun(scope="app")  # once: the next full run sees the job finished and stops polling

    batch_panel()

with tab_model:
    st.markdown(
        f"Model of **{run.name}**: input {image_size}×{image_size} RGB, float 0–255 (the rescaling is inside "
        "the model); outputs `age` (years), `gender` and `race` probabilities. ONNX and TensorFlow Lite files "
        "are converted on request, run in their own runtime and compared with Keras on a fixed input."
    )
    k, o, t = st.columns(3)
    k.download_button(
        "Download .keras",
        keras_bytes(model_key),
        file_name=f"{run.name}.keras",
        mime="application/octet-stream",
        key="predict_dl_keras",
        icon=":material/download:",
        on_click="ignore",
    )
    for column, fmt, label in ((o, "onnx", "ONNX"), (t, "tflite", "TensorFlow Lite")):
        ready = st.session_state.get(f"predict_{fmt}_for") == model_key
        slot = column.empty()
        if not ready and slot.button(
            f"Convert to {label}",
            key=f"predict_{fmt}",
            help="Converts once and checks the result against Keras (takes a few seconds).",
        ):
            try:
                with st.spinner(f"Converting to {label} and checking it against Keras…"):
                    exported(model_key, fmt)
                st.session_state[f"predict_{fmt}_for"] = model_key
                ready = True
            except ValueError as exc:
                column.error(str(exc))
        if ready:
            result = exported(model_key, fmt)
            slot.download_button(
                f"Download {result.suffix}",
                result.data,
                file_name=f"{run.name}{result.suffix}",
                mime="application/octet-stream",
                key=f"predict_dl_{fmt}",
                icon=":material/download:",
                on_click="ignore",
            )
            column.caption(f"Largest difference from Keras per head: {result.parity_text()}")
