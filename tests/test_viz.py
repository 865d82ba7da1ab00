import os
import shutil
from xml.etree import ElementTree

import plotly.graph_objects as go
import pytest

from mmcl_lab import viz
from mmcl_lab.cli import main
from mmcl_lab.config import apply_overrides
from mmcl_lab.run import run_stream


@pytest.fixture(scope="module")
def comm_run(ci_cfg, ci_stream, tmp_path_factory):
    return run_stream(apply_overrides(ci_cfg, {"method.name": "comm"}), tmp_path_factory.mktemp("viz"), ci_stream)


def test_static_figures_build_from_the_run_directory(comm_run, ci_stream):
    for fig in (viz.accuracy_heatmap(comm_run, "known"), viz.accuracy_heatmap(comm_run, "agnostic"),
                viz.drift_curves(comm_run), viz.modality_gap_plot(comm_run), viz.bias_panel(comm_run),
                viz.realignment_plot(comm_run)):
        assert isinstance(fig, go.Figure) and fig.data
    drift = viz.drift_explorer(comm_run, interactive=False)
    assert len(drift.frames) == len(ci_stream) + 1  # one frame per step, step -1 included
    hover = drift.frames[0].data[0].customdata[0]
    assert hover[1].split(":")[0] in {"image", "audio", "depth", "video"}  # sample ids on hover
    html = drift.to_html(include_plotlyjs=False)
    assert "before training" in html and "after task" in html


def test_projection_is_one_fit_over_all_steps_and_cached(comm_run):
    a = viz.project(comm_run, "known", "pca")
    files = list((comm_run.path / "probes").glob("projection_known_pca_*.npy"))
    b = viz.project(comm_run, "known", "pca")
    assert len(files) == 1 and all((a[s] == b[s]).all() for s in a)
    assert sorted(a) == sorted(comm_run.probes())


def test_umap_warm_up_compiles_in_the_background_and_skips_pca():
    assert viz.warm_up("pca") is None
    thread = viz.warm_up("umap")
    thread.join(timeout=300)
    assert not thread.is_alive()


def test_interactive_explorer_has_slider_and_colour_menu(comm_run):
    box = viz.drift_explorer(comm_run, method="pca", interactive=True)
    slider, shown, colour, play = box.children[0].children
    assert slider.description == "model" and colour.options == ("modality", "class", "task")
    assert play.description == "play"  # a play button walks the slider through the steps
    assert shown.value == f"after task {len(comm_run.probes()) - 2}"  # the step, named in full
    slider.value = -1
    assert shown.value == "before training"
    figure = box.children[1]
    n_before = len(figure.data)
    colour.value = "class"  # recolour: one trace per class instead of per modality
    assert len(figure.data) > n_before


def test_one_visual_language_across_figures(comm_run):
    explorer = viz.drift_explorer(comm_run, interactive=False)
    by_name = {t.name: t for t in explorer.data if t.mode == "markers"}
    bias = {t.name.split(" ")[0]: t for t in viz.bias_panel(comm_run).data}
    gap = {t.name: t for t in viz.modality_gap_plot(comm_run).data}
    from mmcl_lab.modalities import get_modality
    for m in comm_run.config().stream.modalities:  # the same modality, the same colour, in every figure
        colour = get_modality(m).colour
        assert by_name[m].marker.color == bias[m].line.color == gap[m].line.color == colour
    classes = viz.drift_figure(comm_run, color="class")
    colours = [t.marker.color for t in classes.data if t.mode == "markers"]
    assert len(colours) == len(set(colours)) == len(comm_run.probe_meta()["class_names"])  # 36 distinct shades


# ---- figures as files, and the training curves ------------------------------------------------------------------

_CHROME = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_training_curves_and_retrieval_matrix_build(comm_run, ci_stream):
    curves = viz.training_curves(comm_run)
    names = {t.name for t in curves.data}
    assert {"loss", "ce"} <= names  # the total and each term COMM's loss returns
    assert len(curves.layout.shapes) == len(ci_stream)  # one shaded band per task
    matrix = viz.retrieval_matrix(comm_run)
    assert list(matrix.data[0].y)[-1] == "text" and matrix.data[0].z.shape == (5, 5)


@pytest.mark.skipif(not _CHROME and not os.environ.get("CI"), reason="figure files need a local Chromium")
def test_figures_command_writes_pdf_and_svg_files(comm_run, tmp_path):
    out = tmp_path / "figs"
    assert main(["figures", str(comm_run.path), "--out", str(out), "--formats", "pdf,svg"]) == 0
    stems = set(viz.standard_figures(comm_run))
    assert stems == {"accuracy_known", "accuracy_agnostic", "training_curves", "drift_curves", "modality_gap",
                     "realignment", "retrieval", "bias"}
    pdfs, svgs = sorted(out.glob("*.pdf")), sorted(out.glob("*.svg"))
    assert {p.stem for p in pdfs} == stems and {p.stem for p in svgs} == stems
    assert not list(out.glob(".*"))  # no staging file left behind
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:] and len(data) > 1000
    for svg in svgs:
        root = ElementTree.parse(svg).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and len(root) > 0
    with pytest.raises(ValueError, match="must end in one of"):
        viz.save(viz.bias_panel(comm_run), tmp_path / "figure.jpg")
