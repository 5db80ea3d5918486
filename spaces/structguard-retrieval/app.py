"""StructGuard retrieval Space: what instance unlearning did to a classifier's embedding space, live.

The paper's Figure 5 (top-5 image-to-image retrieval from the retain gallery, Before vs unlearned, for a
retained or a forgotten query) and Figure 7 (the query's affinities to the semantic anchors, before and
after), on the output folder of ``scripts/run.py``.

    python spaces/structguard-retrieval/app.py                       # the embedded default run (outputs/default)
    python spaces/structguard-retrieval/app.py --run-dir outputs/cifar10-k256
    BEFORE_MODEL=me/before UNLEARNED_MODEL=me/structguard DATASET=uoft-cs/cifar10 python app.py

Every option has an environment variable (RUN_DIR, BEFORE_MODEL, UNLEARNED_MODEL, METHOD, DATASET, FORGET_IDS,
ANCHORS, GALLERY_SIZE), so a Hub Space is configured through its variables.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SPACE_DIR.parents[1]
if (REPO_ROOT / "hf_structguard").is_dir() and str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # run from a source checkout without `pip install -e .`
if str(SPACE_DIR) not in sys.path:
    sys.path.insert(0, str(SPACE_DIR))

import gradio as gr  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from structguard_space import (  # noqa: E402
    DEFAULT_GALLERY_SIZE,
    QUERY_SOURCES,
    TOP_K,
    RetrievalBackend,
    SpaceSources,
)

DEFAULT_RUN_DIR = (REPO_ROOT if (REPO_ROOT / "hf_structguard").is_dir() else Path.cwd()) / "outputs" / "default"
TOP_ANCHORS = 3  # Figure 7 lists the top-3 anchors of each model
AFFINITY_HEADERS = ["anchor", "class", "description", "Before", "unlearned", "change"]
# The table has a row of its own (next to the plot it was cut off at 1280 px); the description takes the rest.
AFFINITY_COLUMN_WIDTHS = ["7%", "12%", "51%", "10%", "10%", "10%"]
UPLOAD_FORMATS = "PNG, JPEG, WebP, GIF or BMP"


def explain_unreadable(image: gr.Image) -> gr.Image:
    """``image`` whose unreadable upload fails with a message saying so, not Gradio's generic "Error" (an
    instance override: a ``gr.Image`` subclass would make Gradio write a ``.pyi`` stub next to this file)."""
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except (OSError, ValueError) as error:  # PIL.UnidentifiedImageError is an OSError
            name = getattr(payload, "orig_name", None) or "the uploaded file"
            raise gr.Error(f"Cannot read {name} as an image ({type(error).__name__}): upload a {UPLOAD_FORMATS} "
                           "picture.") from error

    image.preprocess = checked
    return image


CSS = """
#before-gallery .grid-wrap, #after-gallery .grid-wrap {height: auto; min-height: 0; max-height: none}
#before-gallery .caption-label, #after-gallery .caption-label {white-space: normal; overflow: visible;
  text-overflow: clip; max-width: calc(100% - 8px); font-size: 12px; line-height: 1.25}
"""

INTRO = """# StructGuard: what did unlearning change?
Pick a query from the **retained** training images, the **forgotten** ones (the forget set) or upload one.
Each side shows the top-5 images retrieved from the retain gallery by cosine similarity of the pooled
features (paper Figure 5): **✓** same class as the query, **✗** another class. A well unlearned model still
retrieves the right class for retained queries and no same-class image for forgotten ones. Below: the
query's affinities to the semantic anchors ("stakes") before and after unlearning (paper Figure 7)."""


def affinity_rows(backend: RetrievalBackend, affinities: dict[str, np.ndarray], method: str) -> list[list]:
    """Table rows of the anchors in the top-3 of Before or of the unlearned model, by Before affinity."""
    before, after = affinities["before"], affinities[method]
    top = set(np.argsort(-before)[:TOP_ANCHORS]) | set(np.argsort(-after)[:TOP_ANCHORS])
    labels = backend.anchor_labels()
    rows = []
    for i in sorted(top, key=lambda j: -before[j]):
        name, description = labels[i]
        rows.append([f"A{i + 1}", name, description, round(float(before[i]), 3), round(float(after[i]), 3),
                     round(float(after[i] - before[i]), 3)])
    return rows


def affinity_plot(backend: RetrievalBackend, affinities: dict[str, np.ndarray], method: str):
    """Radar chart of the query's affinity to every anchor, Before vs unlearned (Figure 7)."""
    before, after = affinities["before"], affinities[method]
    count = len(before)
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    closed = np.append(angles, angles[0])
    figure, axes = plt.subplots(figsize=(4.2, 4.2), subplot_kw={"projection": "polar"})
    for values, label, color in ((before, "Before", "tab:blue"), (after, method, "tab:red")):
        line = np.append(values, values[0])
        axes.plot(closed, line, color=color, linewidth=1.8, label=label)
        axes.fill(closed, line, color=color, alpha=0.12)
    low = min(0.0, float(min(before.min(), after.min())))
    axes.set_ylim(low - 0.05, float(max(before.max(), after.max())) + 0.05)
    axes.set_xticks(angles)
    labels = [f"A{i + 1}" + (f"\n{name}" if count <= 20 else "") for i, (name, _) in enumerate(backend.anchor_labels())]
    axes.set_xticklabels(labels if count <= 40 else [""] * count, fontsize=8)
    axes.yaxis.set_major_locator(MaxNLocator(4))
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(loc="upper right", bbox_to_anchor=(1.25, 1.12), fontsize=8)
    figure.tight_layout()
    plt.close(figure)
    return figure


def after_label(method: str | None) -> str:
    return f"Unlearned ({method or 'none'}): top-{TOP_K} from the retain gallery"


def build_demo(run_dir: str | os.PathLike | None = DEFAULT_RUN_DIR, **overrides) -> gr.Blocks:
    """The Gradio app on a run folder; ``overrides`` are :class:`SpaceSources` fields (before_model,
    unlearned_model, method, dataset, forget_ids, anchors, gallery_size).

    The run is loaded and the gallery embedded here, once; problems are shown in the page, and a query that
    needs something missing fails with that message.
    """
    backend = RetrievalBackend(SpaceSources(run_dir=None if run_dir is None else Path(run_dir), **overrides))
    first_source = "Forgotten" if backend.num_queries("Forgotten") else "Retained"

    def run_query(source, index, upload, method):
        try:
            result = backend.query(source, index, upload, method)
        except ValueError as error:  # includes LoadError
            raise gr.Error(str(error)) from error
        rows, plot = [], None
        if result.affinities is not None:
            rows, plot = affinity_rows(backend, result.affinities, method), affinity_plot(backend, result.affinities, method)
        description = f"{result.description} _(answered in {result.seconds * 1000:.0f} ms)_"
        return (
            result.query_image,
            description,
            result.galleries["before"],
            result.galleries[method],
            pd.DataFrame(rows, columns=AFFINITY_HEADERS[:4] + [method, "change"]),
            plot,
        )

    def index_label(source: str) -> str:
        count = backend.num_queries(source)
        return f"Image number in that set (0–{count - 1})" if count else "Image number (no images in that set)"

    def choose_source(source):
        return gr.Number(value=0, label=index_label(source), visible=source != "Upload")

    with gr.Blocks(title="StructGuard retrieval") as demo:
        gr.Markdown(INTRO)
        gr.Markdown(backend.status_markdown(), elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio(list(QUERY_SOURCES), value=first_source, label="Query from")
                index = gr.Number(value=0, precision=0, minimum=0, label=index_label(first_source))
                upload = explain_unreadable(
                    gr.Image(type="pil", label="Your query image (for 'Upload')", height=160)
                )
                method = gr.Dropdown(backend.methods, value=backend.default_method, label="Unlearned model")
                button = gr.Button(f"Retrieve the top-{TOP_K}", variant="primary", elem_id="run-query")
            with gr.Column(scale=1):
                query_image = gr.Image(label="Query", interactive=False, height=180, format="png")
                query_info = gr.Markdown(elem_id="query-info")
        with gr.Row():
            before_gallery = gr.Gallery(label=f"Before: top-{TOP_K} from the retain gallery", columns=TOP_K,
                                        format="png", elem_id="before-gallery", allow_preview=False)
            after_gallery = gr.Gallery(label=after_label(backend.default_method), columns=TOP_K,
                                       format="png", elem_id="after-gallery", allow_preview=False)
        gr.Markdown(f"### Anchor affinity profile of the query (top-{TOP_ANCHORS} anchors of each model)")
        table = gr.Dataframe(headers=AFFINITY_HEADERS, interactive=False, wrap=True,
                             column_widths=AFFINITY_COLUMN_WIDTHS, elem_id="affinity-table")
        plot = gr.Plot(label="Affinity to every anchor")
        gr.Markdown("### Run summary (results.json)")
        summary = gr.Markdown(elem_id="summary")

        button.click(run_query, [source, index, upload, method],
                     [query_image, query_info, before_gallery, after_gallery, table, plot], api_name="query")
        source.change(choose_source, source, index, api_name=False)
        method.change(lambda name: gr.Gallery(label=after_label(name)), method, after_gallery, api_name=False)
        demo.load(backend.summary_markdown, None, summary, api_name="summary")
    demo.backend = backend
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default=env("RUN_DIR", str(DEFAULT_RUN_DIR)),
                        help="Output folder of scripts/run.py (RUN_DIR; default: %(default)s).")
    parser.add_argument("--before-model", default=env("BEFORE_MODEL"), help="Before model: folder or Hub id (BEFORE_MODEL).")
    parser.add_argument("--unlearned-model", default=env("UNLEARNED_MODEL"),
                        help="Unlearned model: folder or Hub id (UNLEARNED_MODEL); default: every method in the run.")
    parser.add_argument("--method", default=env("METHOD"), help="Unlearned model shown first, or the name of --unlearned-model (METHOD).")
    parser.add_argument("--dataset", default=env("DATASET"),
                        help="Dataset: Hub id, local folder or 'digits' (DATASET); default: the run's dataset.")
    parser.add_argument("--forget-ids", default=env("FORGET_IDS"),
                        help="File of forgotten training-row ids (FORGET_IDS); default: the run's forget_set.json.")
    parser.add_argument("--anchors", default=env("ANCHORS"), help="Anchor set: folder or Hub id (ANCHORS); default: the run's anchors/.")
    parser.add_argument("--gallery-size", type=int, default=int(env("GALLERY_SIZE", DEFAULT_GALLERY_SIZE)),
                        help="At most this many retained images in the gallery, 0 = all (GALLERY_SIZE; default: %(default)s).")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"), help="Address to serve on.")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")), help="Port to serve on.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    demo = build_demo(
        args.run_dir,
        before_model=args.before_model,
        unlearned_model=args.unlearned_model,
        method=args.method,
        dataset=args.dataset,
        forget_ids=args.forget_ids,
        anchors=args.anchors,
        gallery_size=args.gallery_size or None,
    )
    serve(demo, server_name=args.host, server_port=args.port)


def serve(demo: gr.Blocks, **launch_kwargs):
    """``demo.launch`` with the page's stylesheet (captions wrap under the thumbnails)."""
    return demo.launch(css=CSS, **launch_kwargs)


if __name__ == "__main__":
    main()
