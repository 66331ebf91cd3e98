"""How fast the app's pages open in a real browser: cold server, warm new session, page switches.

    python benchmarks/app_times.py [--rounds 3]

Starts ``streamlit run streamlit_app.py`` on a free port with an empty app data folder (so the
demo set is drawn from scratch), drives Debian's Chromium with Playwright and prints:

- cold: a fresh server's first visit to ``/`` until the Explore page shows a chart;
- warm: a new browser session on the now warm server (demo faces drawn) until the page has rendered
  with its data (the first metric; the budget) and until its first chart (for information);
- switch: clicking each page in the menu until that page's heading shows and the run is over.

As a baseline measured in the same run, a one-line Streamlit app started the same way gives the
time the machine needs to serve any page at all; the ratios divide by it. Budgets from issue 7:
cold 5 s, warm 2 s, switch 1 s.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CHART = "[data-testid='stPlotlyChart'] .main-svg"
# The page has rendered with its data: the Explore heading and its first metric (Images shown).
FIRST_RENDER = "[data-testid='stMain'] [data-testid='stMetric']"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
PAGES = {
    "Train": "Train a multi-task model",
    "Evaluate": "Evaluate a trained model",
    "Predict": "Predict age, gender and race",
    "Explore": "Explore the data",
}
BUDGETS = {"cold": 5.0, "warm": 2.0, "switch": 1.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(script: Path, workdir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run`` on a free port with app data and runs under ``workdir``; returns when healthy."""
    port = free_port()
    env = {**os.environ, "UTKFACE_APP_DIR": str(workdir / "app"), "UTKFACE_RUNS_DIR": str(workdir / "runs")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(script),
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=REPO,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("streamlit did not become healthy within 120 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def time_first(browser, url: str, *selectors: str) -> list[float]:
    """Seconds from opening ``url`` in a new browser session until each of ``selectors`` is visible."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    times = []
    for selector in selectors:
        page.wait_for_selector(selector, state="visible", timeout=300_000)
        times.append(time.perf_counter() - start)
    context.close()
    return times


def wait_for_demo_set(app_dir: Path, timeout: float = 600) -> float:
    """Seconds until the demo faces, drawn in the background after the cold start, are all on disk."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if any(app_dir.glob("demo/*/.utkface-demo.json")):
            return time.perf_counter() - start
        time.sleep(0.5)
    raise RuntimeError(f"the demo set was not drawn within {timeout:.0f} s")


def switch_times(browser, url: str) -> dict[str, float]:
    """Seconds per menu click until the target page's heading shows and the script run is over."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector(CHART, state="visible", timeout=300_000)
    page.wait_for_selector(IDLE, timeout=120_000)
    nav = page.get_by_test_id("stSidebar")
    times = {}
    for title, heading in PAGES.items():
        link = nav.get_by_test_id("stPageLink").get_by_text(title, exact=True)
        start = time.perf_counter()
        link.click()
        page.get_by_role("heading", name=heading).wait_for(timeout=120_000)
        page.wait_for_selector(IDLE, timeout=120_000)
        times[title] = time.perf_counter() - start
    context.close()
    return times


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = sorted(set(re.findall(r"\bavx512[a-z0-9_]*", text)))
    return " ".join(flags) or ("avx2 (no AVX-512)" if " avx2" in text else "no AVX2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="warm sessions and page-switch rounds (default 3)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        parser.error(f"Chromium not found at {CHROMIUM} (set CHROMIUM=/path/to/chromium)")
    from playwright.sync_api import sync_playwright

    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}  CPU flags: {cpu_flags()}")
    with tempfile.TemporaryDirectory(prefix="utkface-apptimes-") as tmp, sync_playwright() as pw:
        tmp = Path(tmp)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        hello = tmp / "hello.py"
        hello.write_text("import streamlit as st\nst.title('hello')\n")
        proc, url = start_server(hello, tmp / "hello", tmp / "hello.log")
        try:
            baseline = statistics.median(time_first(browser, url, "h1")[0] for _ in range(args.rounds))
        finally:
            stop(proc)

        proc, url = start_server(REPO / "streamlit_app.py", tmp / "app", tmp / "app.log")
        try:
            cold = time_first(browser, url, CHART)[0]
            drawn = wait_for_demo_set(tmp / "app" / "app")
            warm = [time_first(browser, url, FIRST_RENDER, CHART) for _ in range(args.rounds)]
            switches = [switch_times(browser, url) for _ in range(args.rounds)]
        finally:
            stop(proc)
        browser.close()

    def row(name: str, seconds: float, budget: float | None) -> None:
        verdict = "" if budget is None else f"  budget {budget:.0f} s: {'ok' if seconds <= budget else 'OVER'}"
        print(f"{name:<24}{seconds:>8.2f} s{seconds / baseline:>9.1f}x baseline{verdict}")

    print(f"{'measure':<24}{'median':>10}")
    row("baseline (hello app)", baseline, None)
    row("cold first chart", cold, BUDGETS["cold"])
    row("demo faces drawn after", cold + drawn, None)
    row("warm first render", statistics.median(w[0] for w in warm), BUDGETS["warm"])
    row("warm first chart", statistics.median(w[1] for w in warm), None)
    for title in PAGES:
        row(f"switch to {title}", statistics.median(s[title] for s in switches), BUDGETS["switch"])
    print("warm sessions, first render / first chart (s): " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in warm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
