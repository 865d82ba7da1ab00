"""Execute the notebooks and write a static gallery: standalone HTML pages (static figures with animation
frames, plotly.js embedded, no kernel needed) and an index page; every execution is timed."""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from .utils import atomic_write_text

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(path: Path, preset: str, static: bool = True, timeout: int = 1200, workdir: Path | None = None):
    """Run a notebook top to bottom in a fresh kernel with MMCL_PRESET=preset: (executed notebook, seconds).
    Cells run from workdir (default: the notebook's folder), where they write their runs/."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = {"MMCL_PRESET": preset, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           **({"MMCL_STATIC": "1", "PLOTLY_RENDERER": "notebook"} if static else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        start = time.perf_counter()
        resources = {"metadata": {"path": str(workdir or path.parent)}}
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources).execute()
        return nb, time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def gallery(out_dir: str | Path, preset: str = "ci", notebooks: list[Path] | None = None) -> Path:
    """Execute every notebook (static figures) and write <out>/<name>.html plus <out>/index.html."""
    from nbconvert import HTMLExporter

    out = Path(out_dir)
    paths = notebooks or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    exporter = HTMLExporter(template_name="lab")
    rows = []
    for path in tqdm(paths, desc="gallery", unit="notebook"):
        nb, seconds = execute(path, preset)
        body, _ = exporter.from_notebook_node(nb)
        atomic_write_text(out / f"{path.stem}.html", body)
        title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells if c.cell_type == "markdown"), path.stem)
        rows.append(f'<li><a href="{path.stem}.html">{html.escape(title)}</a> <small>({seconds:.0f} s to run, '
                    f"preset {preset})</small></li>")
    atomic_write_text(out / "index.html", "<!doctype html><meta charset='utf-8'><title>mmcl_lab notebooks</title>"
                      "<h1>mmcl_lab notebooks</h1><p>Executed, with static figures: no kernel needed.</p>"
                      f"<ul>{''.join(rows)}</ul>")
    return out / "index.html"
