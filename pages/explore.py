"""Explore: filter the data set, read the tutorial's charts, browse faces, check data quality."""

import streamlit as st

from pages.shared import demo_build, demo_progress, ensure_shell, job_progress, link_widgets, require_data
from utkface_core.config import PRESET_IMAGE_SIZE
from utkface_core.data.splits import filter_frame
from utkface_core.jobs import registry
from utkface_core.labels import GENDERS, MAX_AGE, RACES
from utkface_core.training import charts

ensure_shell()
st.title("Explore the data")

# The filters come before the data: they stay (and stay in the URL) while the data source changes.
left, mid, right = st.columns([2, 1, 2])
age = left.slider("Age range", 0, MAX_AGE, value=(0, MAX_AGE), key="age", bind="query-params")
genders = mid.multiselect("Gender", GENDERS, default=list(GENDERS), key="gender", bind="query-params")
races = right.multiselect("Race", RACES, default=list(RACES), key="race", bind="query-params")
link_widgets("age", "gender", "race", "tab")

source, index = require_data(files=False)
if source.synthetic:
    st.caption(
        "You are looking at the **synthetic demo set**: generated cartoon faces whose labels are drawn into them. "
        "Pick a real UTKFace folder in the sidebar."
    )
    demo_progress(blocking=False)

view = filter_frame(index.frame, age[0], age[1], genders, races)
cols = st.columns(2 + len(GENDERS))
cols[0].metric("Images shown", f"{len(view):,}", help="Images matching the filters")
cols[1].metric("Median age", f"{view['age'].median():.0f}" if len(view) else "–")
for col, name in zip(cols[2:], GENDERS, strict=False):
    col.metric(name.capitalize(), f"{int((view['gender_name'] == name).sum()):,}")

if view.empty:
    st.warning("No image matches these filters: widen the age range or select more groups.")
    st.stop()

# Bound to the URL, the tabs also track which one is open: only that tab's content is built.
tab_age, tab_counts, tab_gallery, tab_quality = st.tabs(
    ["Age", "Counts", "Gallery", "Data quality"], default="Age", key="tab", bind="query-params"
)


def gallery_images(sample) -> list:
    """The sampled faces: their files, or (demo faces not drawn yet) the same faces drawn now in memory."""
    from pathlib import Path

    from utkface_core.data.demo import render_demo_file

    images = []
    for path in sample["path"].tolist():
        if source.synthetic and not Path(path).exists():
            images.append(render_demo_file(path))
        else:
            images.append(path)
    return images


def quality_report() -> None:
    summary = index.summary()
    q = st.columns(5)
    q[0].metric("Image files", f"{summary['files']:,}")
    q[1].metric("Rejected names", len(summary["rejected"]))
    q[2].metric("Recovered names", len(summary["warnings"]))
    q[3].metric("Duplicate groups", summary["duplicate_groups"])
    q[4].metric("Label conflicts", summary["label_conflicts"])
    st.caption(
        f"Duplicate policy **{summary['duplicate_policy']}**: one image kept per group of byte-identical images "
        "whose names agree; "
        f"groups whose names disagree are dropped ({summary['dropped_by_policy']} images dropped). "
        f"{summary['non_images']} non-image files and {summary['copies_in_other_folders']} repeated copies in other "
        "subfolders were ignored."
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
                {
                    "files": ", ".join(g["files"]),
                    "images": g["size"],
                    "conflict": g["conflict"],
                    "disagree on": ", ".join(g["conflicting_fields"]),
                }
                for g in index.duplicate_groups
            ],
            key="quality_duplicates",
        )


def decode_check() -> None:
    st.subheader("Unreadable images")
    if source.synthetic and not demo_build().ready:
        st.caption("Available once the demo faces are drawn (see the progress above).")
        return
    size = PRESET_IMAGE_SIZE["fast"]
    scan_key = f"decode:{index.root}:{size}:{len(index.frame)}"

    def scan_job():
        return next((j for j in reversed(registry().jobs("decode")) if j.key == scan_key), None)

    scanning = scan_job() is not None and scan_job().active

    @st.fragment(run_every=1.0 if scanning else None)
    def decode_panel() -> None:
        job = scan_job()
        if job is None:
            st.caption(
                "Decoding every image finds corrupt, truncated, empty or non-image files. "
                "It runs once; training reuses it."
            )
            if st.button("Check every image", key="quality_scan", icon=":material/fact_check:"):
                from utkface_core.workflow import start_decode_job

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


@st.cache_data(max_entries=32, show_spinner=False)
def figures(tab: str, data: str, low: int, high: int, genders: tuple, races: tuple) -> list:
    """The tab's charts for one data set (root and fingerprint in ``data``) and filter: built once, reused."""
    shown = filter_frame(index.frame, low, high, list(genders), list(races))
    if tab == "Age":
        return [
            charts.age_box(shown, "gender_name"),
            charts.age_box(shown, "race_name"),
            charts.age_box(shown, "race_name", hue="gender_name"),
            charts.age_histogram(shown),
        ]
    return [charts.gender_race_counts(shown)]


data_key = f"{index.root}:{index.fingerprint()}:{len(index.frame)}"
if tab_age.open:
    with tab_age:
        a, b = st.columns(2)
        by_gender, by_race, by_both, histogram = figures("Age", data_key, age[0], age[1], tuple(genders), tuple(races))
        a.plotly_chart(by_gender, key="chart_age_gender")
        b.plotly_chart(by_race, key="chart_age_race")
        a.plotly_chart(by_both, key="chart_age_race_gender")
        b.plotly_chart(histogram, key="chart_age_hist")
if tab_counts.open:
    with tab_counts:
        (counts,) = figures("Counts", data_key, age[0], age[1], tuple(genders), tuple(races))
        st.plotly_chart(counts, key="chart_gender_race")
if tab_gallery.open:
    with tab_gallery:
        seed = st.session_state.setdefault("gallery_seed", 0)
        if st.button("Reshuffle", key="gallery_shuffle", icon=":material/shuffle:"):
            st.session_state["gallery_seed"] = seed = seed + 1
        sample = view.sample(n=min(24, len(view)), random_state=seed)
        st.image(
            gallery_images(sample),
            caption=[f"{r.age} · {r.gender_name} · {r.race_name}" for r in sample.itertuples()],
            width=120,
        )
if tab_quality.open:
    with tab_quality:
        quality_report()
        decode_check()
