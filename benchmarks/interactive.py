"""Issue 7's interactive figures, all in one run: training speed watched in a browser vs the CLI, first charts,
page switches and time to first batch.

    python benchmarks/interactive.py [--data DIR] [--seconds 60] [--rounds 3]

On the synthetic demo set by default (``--data DIR``: a UTKFace folder instead). It starts ``streamlit run`` on a
free port with an empty app folder (a fresh UTKFACE_APP_DIR and runs folder) and drives Debian's Chromium with
Playwright. In order:

1. baseline: a one-line Streamlit app's first render (what serving any page costs on this machine right now);
2. cold first chart: the fresh server's first visit until the Explore page shows a chart;
3. warm first render / first chart: new browser sessions on the now warm server;
4. page switches Explore -> Train -> Evaluate -> Predict -> Explore: one untimed tour (each page's first visit
   imports its modules), then ``--rounds`` timed tours; each click until the page's heading shows and its run is over;
5. trainings of ``--seconds`` (time budget; the Train page's settings otherwise): from the app with the Train page
   open in Chromium the whole time (the first one cold: nothing decoded yet), from the CLI
   (``python -m utkface_core train``), and from the app again (the data decoded by then). images/s come from each
   run's metrics (the trainer's own figure, the same for both); time to first batch from the worker's
   ``first_batch`` event (from the Start click).

Budgets (issue 7): app/CLI images/s >= 0.9, cold first chart 5 s, warm first render 2 s, page switch 1 s, first batch
10 s (demo; 25 s for the real folder, cold) and 3 s for a later training on the same data and size.
The machine's load is printed at the start and the end: other processes slow these figures down.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.time_to_accuracy import cpu_flags  # noqa: E402 - AVX-512 flags, or "avx2 (no avx512)"
from tests.e2e.server import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    free_port,
    start_server,
    stop_server,
    streamlit_command,
)
from tests.waits import wait_until  # noqa: E402

CHART = "[data-testid='stPlotlyChart'] .main-svg"
# The page has rendered with its data: the Explore heading and its first metric (Images shown).
FIRST_RENDER = "[data-testid='stMain'] [data-testid='stMetric']"
PAGES = {
    "Train": "Train a multi-task model",
    "Evaluate": "Evaluate a trained model",
    "Predict": "Predict age, gender and race",
    "Explore": "Explore the data",
}
BUDGETS = {"ratio": 0.9, "cold": 5.0, "warm": 2.0, "switch": 1.0, "first_batch_later": 3.0}
FIRST_BATCH_BUDGET = {"demo": 10.0, "folder": 25.0}
WAIT_S = 900  # upper bound of any one wait: ends a hung run, never times it


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def new_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    return context, page


def time_first(browser, url: str, *selectors: str) -> list[float]:
    """Seconds from opening ``url`` in a new browser session until each of ``selectors`` is visible."""
    context, page = new_page(browser)
    start = time.perf_counter()
    page.goto(url)
    times = []
    for selector in selectors:
        page.wait_for_selector(selector, state="visible")
        times.append(time.perf_counter() - start)
    context.close()
    return times


def switch_tour(browser, url: str) -> dict[str, float]:
    """Seconds per menu click (Explore -> Train -> Evaluate -> Predict -> Explore) until the heading shows and the
    script run is over."""
    context, page = new_page(browser)
    page.goto(url)
    page.wait_for_selector(CHART, state="visible")
    page.wait_for_selector(IDLE)
    menu = page.get_by_test_id("stSidebar")
    times = {}
    for title, heading in PAGES.items():
        link = menu.get_by_test_id("stPageLink").get_by_text(title, exact=True)
        start = time.perf_counter()
        link.click()
        page.get_by_role("heading", name=heading).wait_for()
        page.wait_for_selector(IDLE)
        times[title] = time.perf_counter() - start
    context.close()
    return times


def demo_drawn(app_dir: Path) -> bool:
    """Whether the demo faces (drawn in the background after a cold start) are all on disk."""
    return any(app_dir.glob("demo/*/.utkface-demo.json"))


def standby_settled() -> bool:
    """Whether every standby worker is idle: imports done and the next training prepared (or there is none)."""
    from utkface_core import standby

    return all(s.get("state") == "ready" and s.get("tracing") is False for s in standby.standbys(any_fingerprint=True))


def run_figures(run_dir: Path) -> dict:
    """images/s of a finished run from its metrics (and a whole-run average from its history), via utkface_core.runs."""
    from utkface_core import runs

    info = runs.load_run(run_dir)
    metrics = info.metrics or {}
    if info.state not in ("completed", "stopped") or not metrics:
        raise RuntimeError(f"run {run_dir} ended {info.state}: {info.error or info.message}")
    history = runs.read_history(run_dir)
    counts = info.config.get("counts") or {}
    trained_on = (info.config.get("split") or {}).get("trained_on") or ["train"]
    per_epoch = sum(int(counts.get(name, 0)) for name in trained_on)
    average = None
    if len(history) and "elapsed_s" in history and per_epoch:
        average = len(history) * per_epoch / float(history["elapsed_s"].iloc[-1])
    return {
        "images_per_s": float(metrics["train_images_per_s"]),
        "average": average,
        "epochs": metrics.get("epochs_run"),
        "state": info.state,
    }


def app_training(browser, url: str, query: dict, seconds: float) -> dict:
    """Start a training on the Train page and watch it there until it ends; its figures and time to first batch."""
    from utkface_core import jobs, runs

    context, page = new_page(browser)
    page.goto(f"{url}/train?{urlencode({**query, 'train_budget': seconds / 60})}")
    start = page.get_by_role("button", name="Start training")
    start.wait_for()
    wait_until(start.is_enabled, "the Start button (the data ready)", timeout=WAIT_S, interval=0.5)
    page.wait_for_selector(IDLE)
    before = {j.id for j in jobs.list_jobs("train")}
    start.click()
    job = wait_until(
        lambda: next((j for j in jobs.list_jobs("train") if j.id not in before), None),
        "the training job to appear",
        timeout=60,
    )

    def ended() -> jobs.JobInfo | None:
        current = jobs.load_job(job.dir)
        return current if current is not None and not current.active else None

    # The page stays open (its live fragment polls the run folder every second) until the job has ended.
    job = wait_until(ended, "the training to end", timeout=WAIT_S + seconds, interval=1.0)
    if job.state == "completed":
        page.get_by_text(re.compile(r"time budget of .* reached")).first.wait_for()  # the page saw the end too
    context.close()
    events = runs.read_events(job.dir)[0]
    first = next((e for e in events if e.get("kind") == "first_batch"), None)
    building = next((e for e in events if e.get("message") == "building the model"), None)
    return {
        **run_figures(job.dir),
        "first_batch_s": first["since_submit_s"] if first else None,
        "worker_start_s": (first["t"] - first["since_worker_start_s"] - job.created) if first else None,
        "data_ready_s": (building["t"] - job.created) if building else None,
        # The standby had built and traced this configuration's model before the click (utkface_core.standby).
        "traced_ahead": any("traced ahead" in str(e.get("message")) for e in events),
    }


def cli_training(data: str, seconds: float, out: Path, env: dict) -> dict:
    """The same training from the command line (the Train page's defaults: fast preset, ages 10-65, 200 epochs max)."""
    command = [sys.executable, "-m", "utkface_core", "train", "--data", data, "--out", str(out)]
    command += ["--time-budget", f"{seconds:g}", "--epochs", "200"]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, timeout=WAIT_S + seconds)
    return run_figures(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def row(name: str, seconds: float | None, budget: float | None = None, extra: str = "") -> None:
    """One line of the report: a time, and PASS/FAIL against its budget when it has one."""
    if seconds is None:
        print(f"  {name:<44}{'-':>8}{extra}")
        return
    check = "" if budget is None else f"  budget {budget:g} s: {verdict(seconds <= budget)}"
    print(f"  {name:<44}{seconds:>8.2f} s{check}{extra}")


def report_pages(baseline: float, cold: float, warm: list[list[float]], first_tour: dict, tours: list[dict]) -> None:
    print()
    print("== pages (Chromium; medians) ==")
    row("baseline: one-line app, first render", baseline)
    row("Explore: cold first chart", cold, BUDGETS["cold"])
    row("Explore: warm first render (new session)", statistics.median(w[0] for w in warm), BUDGETS["warm"])
    row("Explore: warm first chart", statistics.median(w[1] for w in warm))
    for title in PAGES:
        median = statistics.median(t[title] for t in tours)
        each = ", ".join(f"{t[title]:.2f}" for t in tours)
        row(
            f"switch to {title} (warm)",
            median,
            BUDGETS["switch"],
            f"   (tours: {each}; first visit {first_tour[title]:.2f})",
        )
    print("  warm sessions, first render / first chart (s): " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in warm))


def report_trainings(seconds: float, kind: str, app_cold: dict, cli: dict, app_warm: dict) -> None:
    print()
    print(f"== training, {seconds:g} s time budget (images/s from each run's metrics) ==")
    for name, figures in (("app 1 (watched, cold)", app_cold), ("CLI", cli), ("app 2 (watched)", app_warm)):
        average = figures["average"]
        print(
            f"  {name:<24}{figures['images_per_s']:>9,.0f} images/s   whole-run average "
            f"{'-' if average is None else f'{average:,.0f}'} images/s (incl. validation), {figures['epochs']} epochs"
        )
    ratio = statistics.mean([app_cold["images_per_s"], app_warm["images_per_s"]]) / cli["images_per_s"]
    print(
        f"  app/CLI = {ratio:.2f} (mean of the two app runs / the CLI run)  >= {BUDGETS['ratio']}: "
        f"{verdict(ratio >= BUDGETS['ratio'])}"
    )
    averages = [f["average"] for f in (app_cold, app_warm, cli)]
    if None not in averages:
        print(f"  app/CLI on whole-run averages = {statistics.mean(averages[:2]) / averages[2]:.2f}")

    print()
    print("== time to first batch (from the Start click; the worker's first_batch event) ==")
    for name, figures, budget in (
        ("first training (cold)", app_cold, FIRST_BATCH_BUDGET[kind]),
        ("later training, same data and size", app_warm, BUDGETS["first_batch_later"]),
    ):
        parts = []
        if figures["worker_start_s"] is not None:
            parts.append(f"worker up {figures['worker_start_s']:.1f} s")
        if figures["data_ready_s"] is not None:
            parts.append(f"data ready {figures['data_ready_s']:.1f} s")
        parts.append("model traced ahead" if figures.get("traced_ahead") else "model built after the click")
        row(name, figures["first_batch_s"], budget, f"   ({', '.join(parts)})" if parts else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="DIR", default=None, help="a UTKFace folder (default: the demo set)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget of each training (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="warm sessions and timed page-switch tours (default 3)")
    parser.add_argument("--pages-only", action="store_true", help="skip the trainings (steps 1-4 only)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        parser.error(f"Chromium not found at {CHROMIUM} (set CHROMIUM=/path/to/chromium)")
    data_dir = Path(args.data).expanduser().resolve() if args.data else None
    if data_dir is not None and not data_dir.is_dir():
        parser.error(f"{data_dir} is not a folder")
    from playwright.sync_api import sync_playwright

    print(f"cores: {os.cpu_count()}  CPU flags: {cpu_flags()}  load average at start: {load()}", flush=True)
    print(f"data: {data_dir or 'the synthetic demo set'}; trainings of {args.seconds:g} s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="utkface-interactive-"))
    env = {
        **os.environ,
        "UTKFACE_APP_DIR": str(tmp / "app"),
        "UTKFACE_RUNS_DIR": str(tmp / "runs"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    query: dict[str, str] = {}
    if data_dir is not None:
        env["UTKFACE_DIR"] = str(data_dir)  # an allowed root of the folder field
        query = {"data_kind": "A folder", "data_folder": str(data_dir)}
    # This process reads the server's job folders (utkface_core.jobs) to follow the trainings.
    os.environ.update({k: env[k] for k in ("UTKFACE_APP_DIR", "UTKFACE_RUNS_DIR")})
    explore = "/?" + urlencode(query) if query else "/"
    trainings = None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        hello = tmp / "hello.py"
        hello.write_text("import streamlit as st\nst.title('hello')\n")
        port = free_port()
        proc, url = start_server(env, tmp / "hello.log", command=streamlit_command(port, hello), port=port)
        try:
            baseline = statistics.median(time_first(browser, url, "h1")[0] for _ in range(args.rounds))
        finally:
            stop_server(proc)

        proc, url = start_server(env, tmp / "app.log")
        try:
            cold = time_first(browser, url + explore, CHART)[0]
            print(f"cold first chart: {cold:.2f} s", flush=True)
            if data_dir is None:
                wait_until(lambda: demo_drawn(tmp / "app"), "the demo faces to be drawn", timeout=WAIT_S, interval=0.5)
            warm = [time_first(browser, url + explore, FIRST_RENDER, CHART) for _ in range(args.rounds)]
            first_tour = switch_tour(browser, url + explore)
            tours = [switch_tour(browser, url + explore) for _ in range(args.rounds)]
            if not args.pages_only:
                print("page switches measured; training (this takes a few minutes)", flush=True)
                app_cold = app_training(browser, url, query, args.seconds)
                print(f"app training 1: {app_cold['images_per_s']:,.0f} images/s", flush=True)
                # The standby that follows a training prepares the next one (CPU for a few seconds): let it finish
                # first, so that it does not share the cores with the CLI run.
                wait_until(standby_settled, "the next standby to be ready", timeout=WAIT_S, interval=0.5)
                cli = cli_training(str(data_dir or "demo"), args.seconds, tmp / "cli-run", env)
                print(f"CLI training: {cli['images_per_s']:,.0f} images/s", flush=True)
                app_warm = app_training(browser, url, query, args.seconds)
                print(f"app training 2: {app_warm['images_per_s']:,.0f} images/s", flush=True)
                trainings = (app_cold, cli, app_warm)
        finally:
            stop_server(proc)
            browser.close()

    report_pages(baseline, cold, warm, first_tour, tours)
    if trainings is not None:
        report_trainings(args.seconds, "folder" if data_dir else "demo", *trainings)
    print()
    print(f"load average at the end: {load()}  (other processes share the cores: compare ratios, not absolutes)")
    print(f"runs and logs kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
