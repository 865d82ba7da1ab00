"""The drift explorer in a real browser: JupyterLab on 127.0.0.1, Debian's chromium driven by Playwright.

The notebooks run the way a person runs them (Run All in JupyterLab, ci preset), then the widgets are used with
the mouse. Screenshots go to $MMCL_ARTIFACTS/browser (default: artifacts/browser in the checkout). Outside CI the
test is skipped when chromium or Playwright is missing; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("MMCL_ARTIFACTS", ROOT / "artifacts")) / "browser"
# Chromium on a closed network: no background connections, no first-run or sync traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NOTEBOOKS = ("03_embedding_drift.ipynb", "04_modality_bias_and_realignment.ipynb")

_missing = [what for what, ok in (("Debian's chromium (apt-get install chromium)", CHROMIUM),
                                  ("playwright (pip install playwright)", importlib.util.find_spec("playwright")))
            if not ok]
if _missing and not os.environ.get("CI"):
    pytest.skip(f"browser test needs {', '.join(_missing)}", allow_module_level=True)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, ci_stream):
    """A JupyterLab server on 127.0.0.1 over a copy of the notebooks; yields its base URL (token included)."""
    assert not _missing, f"browser test needs {', '.join(_missing)}"
    root = tmp_path_factory.mktemp("lab")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, root / name)
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no "would you like news?" toast over the figures
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "MMCL_PRESET": "ci", "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings")}
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"jupyter lab exited: {(root / 'lab.log').read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter lab did not listen within 90 s"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _run_notebook(browser, lab, name: str):
    """Open a notebook in its own JupyterLab workspace, Run All, and wait until every cell has run."""
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/workspaces/{name.split('_')[0]}/tree/{name}?reset&token={token}")
    notebook = "window.jupyterapp?.shell.currentWidget"
    page.wait_for_function(f"() => {notebook}?.context?.path === {json.dumps(name)} && {notebook}.sessionContext"
                           "?.session?.kernel?.connectionStatus === 'connected'", timeout=90_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        page.wait_for_function(f"""() => {{
            const nb = {notebook};
            const prompts = [...nb.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return nb.sessionContext.session.kernel.status === 'idle' && prompts.length > 0
                && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }}""", timeout=300_000, polling=500)
        page.wait_for_function("() => !document.body.innerText.includes('Loading widget')", timeout=30_000)
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name.split('_')[0]}_after_run_all.png"))
    tracebacks = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    assert tracebacks.count() == 0, tracebacks.first.inner_text()[:2000]
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert stderr.count() == 0, f"warnings or stderr in {name}: {stderr.first.inner_text()[:500]}"
    assert page.get_by_text("Error displaying widget").count() == 0
    assert "Loading widget" not in page.inner_text("body")
    return page


def _explorer_state(page) -> dict:
    """Plotted x values and legend entries of the first drift explorer's figure."""
    return page.evaluate("""() => {
        const plot = document.querySelector('.widget-vbox .js-plotly-plot');
        return {x: plot.data.map(t => Array.from(t.x ?? []).slice(0, 50)),
                legend: [...plot.querySelectorAll('.legendtext')].map(e => e.textContent)};
    }""")


def test_drift_explorer_responds_to_slider_and_colour_menu(browser, lab):
    page = _run_notebook(browser, lab, NOTEBOOKS[0])
    SHOTS.mkdir(parents=True, exist_ok=True)
    explorer = page.locator(".widget-vbox").first
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "03_drift_explorer.png"))
    before = _explorer_state(page)
    assert before["legend"] == ["image", "audio", "depth", "video"]

    handle = explorer.locator(".noUi-handle").first  # the step slider opens on the last step
    track = explorer.locator(".noUi-base").first.bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + 2, box["y"] + box["height"] / 2, steps=10)  # drag to "before training"
    page.mouse.up()
    explorer.locator(".widget-label", has_text="before training").wait_for(timeout=30_000)
    page.wait_for_function(f"() => JSON.stringify(Array.from(document.querySelector('.widget-vbox .js-plotly-plot')"
                           f".data[0].x ?? []).slice(0, 50)) !== {json.dumps(json.dumps(before['x'][0]))}",
                           timeout=30_000)
    after_drag = _explorer_state(page)
    assert after_drag["x"] != before["x"], "dragging the step slider did not change the plotted data"
    page.screenshot(path=str(SHOTS / "03_drift_explorer_before_training.png"))

    explorer.locator(".widget-dropdown select").first.select_option("class")
    page.wait_for_function("() => document.querySelectorAll('.widget-vbox .js-plotly-plot')[0]"
                           ".querySelectorAll('.legendtext').length > 4", timeout=30_000)
    by_class = _explorer_state(page)
    assert set(by_class["legend"]) != set(before["legend"]) and len(by_class["legend"]) > 4
    page.screenshot(path=str(SHOTS / "03_drift_explorer_by_class.png"))
    page.close()


def test_bias_and_realignment_notebook_renders(browser, lab):
    page = _run_notebook(browser, lab, NOTEBOOKS[1])
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.locator(".js-plotly-plot").count() >= 4
    for i, plot in enumerate(page.locator(".jp-OutputArea .js-plotly-plot").all()):
        plot.scroll_into_view_if_needed()
        plot.screenshot(path=str(SHOTS / f"04_figure_{i}.png"))
    page.close()
