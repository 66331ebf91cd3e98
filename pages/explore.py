"""Explore: filter the data set, read the tutorial's charts, browse faces, check data quality."""

import streamlit as st

from pages.shared import ensure_shell, job_progress, mirror_to_url, require_data, url_state
from utkface_core import charts
from utkface_core.jobs import registry
from utkface_core.config import PRESET_IMAGE_SIZE
from utkface_core.workflow import start_decode_job
from utkface_core.labels import GENDERS, MAX_AGE, RACES
from utkface_core.splits import filter_frame

ensure_shell()
st.title("Explore the data")
source, index = require_data()
if source.synthetic:
    st.caption("You are looking at the **synthetic demo set**: generated cartoon faces whose labels are drawn into them. Pick a real UTKFace folder in the sidebar.")


def parse_age(text: str) -> tuple[int, int]:
    low, high = (int(v) for v in text.split("-"))
    return (max(0, min(low, high)), min(MAX_AGE, max(low, high)))


def parse_names(allowed: tuple[str, ...]):
    return lambda text: [v for v in text.split(",") if v in allowed]


url_state("explore_age", "age", parse_age, (0, MAX_AGE))
url_state("explore_genders", "gender", parse_names(GENDERS), list(GENDERS))
url_state("explore_races", "race", parse_names(RACES), list(RACES))

left, mid, right = st.columns([2, 1, 2])
age = left.slider("Age range", 0, MAX_AGE, key="explore_age")
genders = mid.multiselect("Gender", GENDERS, key="explore_genders")
races = right.multiselect("Race", RACES, key="explore_races")
mirror_to_url(
    {
        "explore_age": ("age", f"{age[0]}-{age[1]}"),
        "explore_genders": ("gender", ",".join(genders)),
        "explore_races": ("race", ",".join(races)),
    }
)

view = filter_frame(index.frame, age[0], age[1], genders, races)
cols = st.columns(2 + len(GENDERS))
cols[0].metric("Images shown", f"{len(view):,}", help="Images matching the filters")
cols[1].metric("Median age", f"{view['age'].median():.0f}" if len(view) else "–")
for col, name in zip(cols[2:], GENDERS):
    col.metric(name.capitalize(), f"{int((view['gender_name'] == name).sum()):,}")

if view.empty:
    st.warning("No image matches these filters: widen the age range or select more groups.")
    st.stop()

tab_age, tab_counts, tab_gallery, tab_quality = st.tabs(["Age", "Counts", "Gallery", "Data quality"])
with tab_age:
    a, b = st.columns(2)
    a.plotly_chart(charts.age_box(view, "gender_name"), key="chart_age_gender")
    b.plotly_chart(charts.age_box(view, "race_name"), key="chart_age_race")
    a.plotly_chart(charts.age_box(view, "race_name", hue="gender_name"), key="chart_age_race_gender")
    b.plotly_chart(charts.age_histogram(view), key="chart_age_hist")
with tab_counts:
    st.plotly_chart(charts.gender_race_counts(view), key="chart_gender_race")
with tab_gallery:
    seed = st.session_state.setdefault("gallery_seed", 0)
    if st.button("Reshuffle", key="gallery_shuffle", icon=":material/shuffle:"):
        st.session_state["gallery_seed"] = seed = seed + 1
    sample = view.sample(n=min(24, len(view)), random_state=seed)
    st.image(
        sample["path"].tolist(),
        caption=[f"{r.age} · {r.gender_name} · {r.race_name}" for r in sample.itertuples()],
        width=120,
    )
with tab_quality:
    summary = index.summary()
    q = st.columns(5)
    q[0].metric("Image files", f"{summary['files']:,}")
    q[1].metric("Rejected names", len(summary["rejected"]))
    q[2].metric("Recovered names", len(summary["warnings"]))
    q[3].metric("Duplicate groups", summary["duplicate_groups"])
    q[4].metric("Label conflicts", summary["label_conflicts"])
    st.caption(
        f"Duplicate policy **{summary['duplicate_policy']}**: one image kept per group of byte-identical images whose names agree; "
        f"groups whose names disagree are dropped ({summary['dropped_by_policy']} images dropped). "
        f"{summary['non_images']} non-image files and {summary['copies_in_other_folders']} repeated copies in other subfolders were ignored."
    )
    if summary["rejected"]:
        st.subheader("Rejected file names")
        st.dataframe(summary["rejected"], key="quality_rejected")
    if summary["warnings"]:
        st.subheader("Names recovered leniently")
        st.dataframe(summary["warnings"], key="quality_warnings")
    if index.duplicate_groups:
        st.subheader("Duplicate groups")
        st.dataframe(
            [
                {"files": ", ".join(g["files"]), "images": g["size"], "conflict": g["conflict"], "disagree on": ", ".join(g["conflicting_fields"])}
                for g in index.duplicate_groups
            ],
            key="quality_duplicates",
        )

    st.subheader("Unreadable images")
    size = PRESET_IMAGE_SIZE["fast"]
    scan_key = f"decode:{index.root}:{size}:{len(index.frame)}"

    def scan_job():
        return next((j for j in reversed(registry().jobs("decode")) if j.key == scan_key), None)

    scanning = scan_job() is not None and scan_job().active

    @st.fragment(run_every=1.0 if scanning else None)
    def decode_panel() -> None:
        job = scan_job()
        if job is None:
            st.caption("Decoding every image finds corrupt, truncated, empty or non-image files. It runs once; training reuses it.")
            if st.button("Check every image", key="quality_scan", icon=":material/fact_check:"):
                start_decode_job(index, size)
                st.rerun()
            return
        job_progress(job)
        if not job.active and scanning:
            st.rerun()  # stop polling
        if job.state == "completed":
            errors = job.result.errors
            if errors:
                st.error(f"{len(errors)} image(s) could not be read; they are left out of training.")
                st.dataframe(errors, key="quality_corrupt")
            else:
                st.success(f"All {len(job.result.paths):,} images decode cleanly.")

    decode_panel()
