"""Tests of the figures: what each draws matches its input, colours are fixed per method, PNGs are valid."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from fake_outputs import MODEL, SEED, TRAIN_EXAMPLES, VAL_EXAMPLES, fake_methods, write_fake_workspace
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.spines import Spine

from pubmedqa_peft import paths, plotting
from pubmedqa_peft.config import Params
from pubmedqa_peft.reports import load_plot_inputs, run_plot_stage
from pubmedqa_peft.task import THREE_LABELS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = fake_methods()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ws")
    write_fake_workspace(root)
    return root


@pytest.fixture(scope="module")
def inputs(workspace: Path):
    return load_plot_inputs(workspace)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict[str, Figure]]:
    """The whole plot stage, run once on its own fake workspace; also the figures it saved, by file stem."""
    root = tmp_path_factory.mktemp("stage")
    write_fake_workspace(root)
    saved: dict[str, Figure] = {}
    original = plotting.save_figure

    def keep(fig: Figure, target: Path | str, dpi: int) -> Path:
        saved[Path(target).stem] = fig
        return original(fig, target, dpi)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plotting, "save_figure", keep)
        written = run_plot_stage(Params(), root)
    return root, written, saved


@pytest.fixture(scope="module")
def figures(inputs) -> dict[str, Figure]:
    every = plotting.order_methods(inputs.test)
    return {
        "metric_bars": plotting.plot_metric_bars(inputs.test, every, "all"),
        "footprint": plotting.plot_footprint(inputs.test, plotting.footprint_methods(inputs.test)),
        "cost_benefit": plotting.plot_cost_benefit(inputs.test, inputs.train),
        "loss": plotting.plot_loss_curves(inputs.losses),
        "latency": plotting.plot_latency(inputs.test, every),
        "confusion": plotting.plot_confusion(inputs.test, every),
        "coverage": plotting.plot_coverage_accuracy(inputs.coverage, inputs.test, inputs.eval["tau"]),
        "reliability": plotting.plot_reliability(inputs.predictions, 10),
    }


def _artists(fig: Figure, method: str) -> list:
    return list(fig.findobj(lambda a: a.get_gid() == method))


def _panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if str(ax.get_gid()).startswith("panel:")]


def _plain(text: str) -> str:
    """Footer text as read: wrapped lines joined, no-break spaces as spaces."""
    return text.replace("\u00a0", " ").replace("\n", " ")


def _drawn(fig: Figure):
    """Lay out and draw ``fig`` off screen; returns the renderer, for the extents of what was drawn."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _shown_inside(ax, artist: Line2D) -> bool:
    """Whether the (single) point of ``artist`` lands inside ``ax``'s frame (edges included) once drawn."""
    x, y = artist.get_transform().transform((artist.get_xdata()[0], artist.get_ydata()[0]))
    box = ax.bbox
    return box.x0 - 0.5 <= x <= box.x1 + 0.5 and box.y0 - 0.5 <= y <= box.y1 + 0.5


def test_every_method_has_its_own_colour() -> None:
    colours = [plotting.method_color(m) for m in METHODS]
    assert len(set(colours)) == len(METHODS)
    assert plotting.method_color("fewshot_k3") != plotting.method_color("fewshot_k5")
    # An unforeseen method gets a colour too, the same one every time.
    assert plotting.method_color("new_method") == plotting.method_color("new_method")


def test_order_puts_base_and_peft_first_and_fewshot_by_k() -> None:
    shuffled = ["majority", "fewshot_k10", "lora", "zzz", "tfidf_logreg", "fewshot_k3", "base", "prefix", "prompt"]
    assert plotting.order_methods(shuffled) == [
        "base",
        "prompt",
        "prefix",
        "lora",
        "fewshot_k3",
        "fewshot_k10",
        "tfidf_logreg",
        "majority",
        "zzz",
    ]


def test_metric_bars_show_accuracy_and_f1_of_each_method(figures, inputs) -> None:
    fig = figures["metric_bars"]
    for method in METHODS:
        bars = _artists(fig, method)
        assert len(bars) == 2, method
        heights = [b.get_height() for b in sorted(bars, key=lambda b: b.get_x())]
        assert heights == pytest.approx([inputs.test[method]["accuracy"], inputs.test[method]["macro_f1"]])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [plotting.method_label(m) for m in plotting.order_methods(METHODS)]


def test_headline_figure_has_only_base_and_peft(inputs) -> None:
    fig = plotting.plot_metric_bars(inputs.test, ["base", "prompt", "prefix", "lora"], "t")
    drawn = {b.get_gid() for b in fig.findobj(Rectangle) if b.get_gid()}
    assert drawn == {"base", "prompt", "prefix", "lora"}


def test_footprint_bars_are_trainable_counts_on_log_scale(figures, inputs) -> None:
    fig = figures["footprint"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    shown = plotting.footprint_methods(inputs.test)
    assert {"base", "prompt", "prefix", "lora"} <= set(shown)
    assert not any(m.startswith("fewshot") for m in shown) and "majority" not in shown
    for method in shown:
        bars = _artists(fig, method)
        trainable = inputs.test[method]["trainable_params"]
        assert [b.get_width() for b in bars] == ([trainable] if trainable else [])
    labels = " ".join(t.get_text() for t in ax.texts)
    assert "frozen" in labels and f"{inputs.test['lora']['trainable_pct']:.3g}%" in labels


def test_cost_benefit_puts_each_method_at_its_cost_and_macro_f1(figures, inputs) -> None:
    fig = figures["cost_benefit"]
    params_ax, memory_ax = fig.axes[:2]
    assert params_ax.get_xscale() == "log" and memory_ax.get_xscale() == "linear"
    for method in inputs.train:
        m = inputs.test[method]
        points = [a for a in _artists(fig, method) if isinstance(a, Line2D)]
        assert len(points) == 2, method  # one per panel
        drawn = sorted((float(p.get_xdata()[0]), float(p.get_ydata()[0])) for p in points)
        expected = sorted(
            [(m["trainable_params"], m["macro_f1"]), (inputs.train[method]["peak_memory_mb"], m["macro_f1"])]
        )
        assert [c for xy in drawn for c in xy] == pytest.approx([c for xy in expected for c in xy])
    base = [ln for ln in params_ax.lines if ln.get_linestyle() == "--"]
    assert base and base[0].get_ydata()[0] == pytest.approx(inputs.test["base"]["macro_f1"])


def test_loss_curves_plot_the_tsv_values(figures, inputs) -> None:
    fig = figures["loss"]
    assert len(_panels(fig)) == len(inputs.losses) == 3
    for method, curves in inputs.losses.items():
        line, marks = sorted(_artists(fig, method), key=lambda a: a.get_linestyle() == "None")
        np.testing.assert_allclose(line.get_ydata(), curves["train"]["loss"])
        np.testing.assert_allclose(marks.get_xdata(), curves["val"]["step"])
        assert marks.get_linestyle() == "None"


def test_loss_panels_share_one_y_range_from_zero_and_say_why_val_is_lower(figures, inputs) -> None:
    fig = figures["loss"]
    _drawn(fig)
    limits = {ax.get_ylim() for ax in _panels(fig)}
    assert len(limits) == 1  # one y-range: the panels' losses compare by height
    ((bottom, top),) = limits
    highest = max(max(c["train"]["loss"].max(), c["val"]["loss"].max()) for c in inputs.losses.values())
    assert bottom == 0 and top >= highest
    # The fake, like real runs, has validation below training loss at the end: the figure says why.
    caption = " ".join(_plain(t.get_text()) for t in fig.findobj(lambda a: a.get_gid() == "context"))
    assert "dropout" in caption and "mean over the steps since the previous log" in caption
    assert "end of the epoch" in caption


def test_latency_bars_are_medians_in_ms(figures, inputs) -> None:
    fig = figures["latency"]
    for method in METHODS:
        (bar,) = _artists(fig, method)
        assert bar.get_width() == pytest.approx(inputs.test[method]["latency_s"]["median"] * 1e3)
    assert "(ms)" in fig.axes[0].get_xlabel()


def test_confusion_has_one_panel_per_method_with_counts(figures, inputs) -> None:
    fig = figures["confusion"]
    panels = _panels(fig)
    assert [ax.get_gid() for ax in panels] == [f"panel:{m}" for m in plotting.order_methods(METHODS)]
    for ax in panels:
        method = ax.get_gid().removeprefix("panel:")
        conf = inputs.test[method]["confusion"]
        shown = sorted(int(t.get_text().split("\n")[0]) for t in ax.texts)
        assert shown == sorted(conf[g][p] for g in ("yes", "no") for p in ("yes", "no"))
        assert sum(shown) == inputs.test[method]["n"]


def _tau_mark(fig: Figure, ax, method: str) -> Line2D:
    """The operating-τ mark drawn for ``method`` in panel ``ax`` (a one-point Line2D)."""
    (mark,) = [a for a in _artists(fig, method) if a.axes is ax and len(a.get_xdata()) == 1 and a.get_marker() == "D"]
    return mark


def test_coverage_has_one_panel_per_method_with_its_curve_and_a_visible_tau_mark(figures, inputs) -> None:
    fig = figures["coverage"]
    tau = inputs.eval["tau"]
    _drawn(fig)
    panels = _panels(fig)
    assert [ax.get_gid() for ax in panels] == [f"panel:{m}" for m in inputs.coverage]
    for ax in panels:
        method = ax.get_gid().removeprefix("panel:")
        mine = [a for a in _artists(fig, method)]
        assert {a.axes for a in mine} == {ax}  # a method's own artists are in its panel only
        curve = max(mine, key=lambda a: len(a.get_xdata()))
        df = inputs.coverage[method].dropna()
        np.testing.assert_allclose(sorted(curve.get_xdata()), sorted(df["coverage"]))
        # Measured points are shown as points (or steps), not as one long straight line.
        assert curve.get_marker() not in ("None", None, "") or curve.get_drawstyle().startswith("steps")
        mark = _tau_mark(fig, ax, method)
        m = inputs.test[method]
        assert mark.get_visible() and mark.get_markersize() >= 6
        assert _shown_inside(ax, mark), method
        assert mark.get_xdata()[0] == pytest.approx(m["coverage"])
        if m["selective_accuracy"] is not None:
            assert mark.get_ydata()[0] == pytest.approx(m["selective_accuracy"])
        # Above the grey curves of the other methods, and labelled with τ in the panel.
        others = [a for a in ax.lines if str(a.get_gid()).startswith("others:")]
        assert len(others) == len(panels) - 1 and all(o.get_zorder() < mark.get_zorder() for o in others)
        labels = [ax.get_title(), *(t.get_text() for t in ax.texts)]
        assert sum(f"τ = {tau:.2f}" in text for text in labels) >= 2, labels  # title and mark label
    assert any(f"{tau:.2f}" in t.get_text() for t in fig.legends[0].get_texts())


def test_coverage_axis_and_title_agree_on_the_direction_of_tau(figures) -> None:
    fig = figures["coverage"]
    for ax in _panels(fig):
        left, right = ax.get_xlim()
        assert left < 0 < 1 < right  # coverage 0 on the left, 1 on the right, in every panel
    # Coverage falls as τ rises, so the title must say raising τ moves a method left.
    assert "raising τ moves it left" in fig.get_suptitle()


def test_coverage_mark_stays_visible_when_nothing_is_answered_or_tau_is_off_the_grid() -> None:
    grid = pd.DataFrame(
        {"tau": [0.5, 0.6, 0.7, 0.8], "coverage": [1.0, 0.6, 0.3, 0.0], "selective_accuracy": [0.7, 0.8, 0.9, np.nan]}
    )
    flat = pd.DataFrame(
        {"tau": [0.5, 0.6, 0.7, 0.8], "coverage": [1.0, 0.0, 0.0, 0.0], "selective_accuracy": [0.6] + [np.nan] * 3}
    )
    # τ = 0.65 is not on the sweep grid: the marks come from eval.json's numbers at exactly τ.
    test = {
        "lora": {"coverage": 0.45, "selective_accuracy": 0.85},
        "majority": {"coverage": 0.0, "selective_accuracy": None},
    }
    fig = plotting.plot_coverage_accuracy({"lora": grid, "majority": flat}, test, 0.65)
    _drawn(fig)
    lora, majority = _panels(fig)
    mark = _tau_mark(fig, lora, "lora")
    assert (mark.get_xdata()[0], mark.get_ydata()[0]) == pytest.approx((0.45, 0.85))
    mark = _tau_mark(fig, majority, "majority")
    assert _shown_inside(majority, mark) and mark.get_xdata()[0] == 0.0
    assert any("nothing answered" in t.get_text() for t in majority.texts)


def test_shared_x_keeps_tick_labels_under_a_removed_cell() -> None:
    # 5 panels in 4 columns: the last three of the first row have no panel below them.
    curves = {m: pd.DataFrame({"tau": [0.5], "coverage": [1.0], "selective_accuracy": [0.7]}) for m in "abcde"}
    test = {m: {"coverage": 1.0, "selective_accuracy": 0.7} for m in curves}
    fig = plotting.plot_coverage_accuracy(curves, test, 0.5)
    _drawn(fig)
    panels = _panels(fig)
    assert len(panels) == 5
    for ax in panels[1:]:
        assert all(tick.label1.get_visible() for tick in ax.xaxis.get_major_ticks()), ax.get_gid()
        assert ax.get_xlabel()


def test_reliability_bars_count_every_example_and_match_the_reported_ece(figures, inputs) -> None:
    fig = figures["reliability"]
    panels = _panels(fig)
    assert len(panels) == len(METHODS)
    for ax in panels:
        method = ax.get_gid().removeprefix("panel:")
        counts = [int(t.get_text()) for t in ax.texts]
        assert sum(counts) == inputs.test[method]["n"]
        assert len(_artists(fig, method)) == len(counts)
        # The panel's ECE uses the same bins as the ECE in eval.json.
        assert f"ECE = {inputs.test[method]['ece']:.3f}" in ax.get_title()


def test_reliability_bar_heights_by_hand() -> None:
    df = pd.DataFrame({"label": ["yes", "no", "yes", "no"], "p_yes": [0.52, 0.54, 0.99, 0.01]})
    fig = plotting.plot_reliability({"lora": df}, 5)
    bars = sorted(_artists(fig, "lora"), key=lambda b: b.get_x())
    # [0.5, 0.6): 0.52 right, 0.54 wrong (gold no, predicted yes) -> 0.5; [0.9, 1]: both right -> 1.0
    assert [b.get_height() for b in bars] == [0.5, 1.0]
    assert [b.get_width() for b in bars] == pytest.approx([0.1, 0.1])


def _colour(artist) -> tuple[float, ...]:
    if isinstance(artist, Spine):  # the coloured frame of a confusion panel
        rgba = artist.get_edgecolor()
    elif isinstance(artist, Line2D):
        rgba = to_rgba(artist.get_color())
    else:
        rgba = artist.get_facecolor()
    return tuple(np.round(rgba, 4))


def test_colours_are_the_same_for_a_method_in_every_figure(figures) -> None:
    seen: dict[str, set] = {}
    for name, fig in figures.items():
        for method in METHODS:
            for artist in _artists(fig, method):
                seen.setdefault(method, set()).add((name, _colour(artist)))
    assert set(seen) == set(METHODS)
    for method, drawn in seen.items():
        colours = {colour for _, colour in drawn}
        assert colours == {tuple(np.round(to_rgba(plotting.method_color(method)), 4))}, method
        # Every method appears in every all-method figure (footprint and loss curves cover fewer).
        assert {"metric_bars", "latency", "confusion", "coverage", "reliability"} <= {n for n, _ in drawn}


def test_every_figure_is_a_readable_png(rendered) -> None:
    root, written, _ = rendered
    expected = [root / paths.figure_file(name) for name in paths.FIGURE_NAMES]
    assert written[: len(expected)] == expected
    for path in expected:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, path
        assert len(data) > 15_000, path
        image = mpimg.imread(path)
        height, width = image.shape[:2]
        assert height >= 400 and width >= 600, (path, image.shape)
        # Not blank: a real plot has many distinct colours (RGB packed into one integer per pixel).
        rgb = (image[..., :3] * 255).astype(np.uint32)
        assert len(np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])) > 20, path


def test_png_bytes_are_reproducible(inputs, tmp_path: Path) -> None:
    footer = plotting.FigureContext(model=MODEL).evaluation("89")
    draw = {
        "latency": lambda: plotting.plot_latency(inputs.test, METHODS, footer=footer),
        # Many small artists (grey curves, markers, labels on blended transforms): a stricter case.
        "coverage": lambda: plotting.plot_coverage_accuracy(inputs.coverage, inputs.test, 0.7, footer=footer),
    }
    for name, build in draw.items():
        first = plotting.save_figure(build(), tmp_path / f"{name}_a.png", dpi=60)
        second = plotting.save_figure(build(), tmp_path / f"{name}_b.png", dpi=60)
        assert first.read_bytes() == second.read_bytes(), name


def test_save_figure_leaves_the_old_file_when_drawing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    fig = Figure()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        plotting.save_figure(fig, target, dpi=50)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_drawing_changes_no_global_matplotlib_setting(figures) -> None:
    # The house style is applied per figure; the caller's settings are untouched.
    assert mpl.rcParams["axes.spines.top"] is True
    assert mpl.rcParams["font.size"] == mpl.rcParamsDefault["font.size"]


def test_every_figure_states_the_model_split_n_and_seed(rendered) -> None:
    _, _, saved = rendered
    assert set(saved) == set(paths.FIGURE_NAMES)
    for name, fig in saved.items():
        renderer = _drawn(fig)
        (footer,) = fig.findobj(lambda a: a.get_gid() == "context")
        text = _plain(footer.get_text())
        assert f"model: {MODEL}" in text and f"seed {SEED}" in text, name
        if name == "loss_curves":
            assert f"train split, n = {TRAIN_EXAMPLES}" in text and f"val split, n = {VAL_EXAMPLES}" in text
        else:
            assert "test split, n = 89" in text, name
        # Inside the picture, and clear of every legend (a legend below the axes would cover it).
        box = footer.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y0 >= fig.bbox.y0, name
        for legend in fig.legends:
            assert not box.overlaps(legend.get_window_extent(renderer)), name


def test_context_line_names_both_seeds_only_when_they_differ() -> None:
    same = plotting.FigureContext(model="m", train_seed="42", eval_seed="42")
    assert _plain(same.evaluation("89")) == "model: m · test split, n = 89 · seed 42"
    both = plotting.FigureContext(model="m", train_seed="42", eval_seed="7", train_n="712")
    assert "train seed 42, evaluate seed 7" in _plain(both.evaluation("89"))
    assert _plain(both.training()) == "model: m · train split, n = 712 · seed 42"
    assert _plain(plotting.FigureContext().evaluation("89")) == "model: unknown model · test split, n = 89"


# --- the three-label task (yes/no/maybe) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs3(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ws3")
    write_fake_workspace(root, labels=THREE_LABELS.labels)
    return load_plot_inputs(root)


@pytest.fixture(scope="module")
def figures3(inputs3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Figure]:
    """Every figure of the three-label workspace as render_figures builds it (drawn, not encoded as PNG)."""
    built: dict[str, Figure] = {}

    def keep(fig: Figure, target: Path | str, dpi: int) -> Path:
        built[Path(target).stem] = fig
        return Path(target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plotting, "save_figure", keep)
        plotting.render_figures(
            inputs3.test,
            inputs3.losses,
            inputs3.coverage,
            inputs3.predictions,
            tau=inputs3.eval["tau"],
            bins=10,
            dpi=50,
            out_dir=tmp_path_factory.mktemp("figs3"),
            train=inputs3.train,
            labels=inputs3.task.labels,
        )
    return built


def test_confusion_labels_are_shown_yes_first_whatever_the_file_order() -> None:
    assert plotting.confusion_labels({"no": {}, "yes": {}}) == ("yes", "no")
    assert plotting.confusion_labels({"no": {}, "yes": {}, "maybe": {}}) == ("yes", "no", "maybe")


@pytest.mark.parametrize("given", [True, False], ids=["labels-given", "labels-from-the-matrix"])
def test_three_label_confusion_has_a_3x3_panel_per_method(figures3, inputs3, given: bool) -> None:
    every = plotting.order_methods(inputs3.test)
    fig = figures3["confusion"] if given else plotting.plot_confusion(inputs3.test, every)
    panels = _panels(fig)
    assert [ax.get_gid() for ax in panels] == [f"panel:{m}" for m in every]
    shown = ["yes", "no", "maybe"]
    for ax in panels:
        method = ax.get_gid().removeprefix("panel:")
        conf = inputs3.test[method]["confusion"]
        assert [t.get_text() for t in ax.get_xticklabels()] == shown
        assert [t.get_text() for t in ax.get_yticklabels()] == shown
        assert len(ax.texts) == 9
        # Each cell's count sits at (predicted column, gold row) of the display order.
        for text in ax.texts:
            x, y = text.get_position()
            assert int(text.get_text().split("\n")[0]) == conf[shown[round(y)]][shown[round(x)]], (method, x, y)
        assert sum(int(t.get_text().split("\n")[0]) for t in ax.texts) == inputs3.test[method]["n"]


def test_three_label_reliability_bins_the_top_probability_from_one_third(figures3, inputs3) -> None:
    fig = figures3["reliability"]
    edges = np.linspace(1 / 3, 1, 11)
    assert "[1/3, 1]" in fig.get_suptitle()
    for ax in _panels(fig):
        method = ax.get_gid().removeprefix("panel:")
        assert ax.get_xlim() == pytest.approx((1 / 3, 1))
        bars = _artists(fig, method)
        assert bars
        for bar in bars:
            assert bar.get_width() == pytest.approx(2 / 30)
            assert np.min(np.abs(edges - bar.get_x())) == pytest.approx(0, abs=1e-9)
        assert sum(int(t.get_text()) for t in ax.texts) == inputs3.test[method]["n"]
        assert f"ECE = {inputs3.test[method]['ece']:.3f}" in ax.get_title()


def test_three_label_reliability_by_hand() -> None:
    df = pd.DataFrame(
        {
            "label": ["yes", "maybe", "no", "maybe"],
            # Rounded as the CSV writes them: the last row sums to 1.000002, and still counts.
            "p_no": [0.30, 0.36, 0.123457, 0.02],
            "p_yes": [0.35, 0.30, 0.123457, 0.03],
            "p_maybe": [0.35, 0.34, 0.753088, 0.95],
        }
    )
    fig = plotting.plot_reliability({"lora": df}, 10, labels=THREE_LABELS.labels)
    bars = sorted(_artists(fig, "lora"), key=lambda b: b.get_x())
    # [1/3, 0.4): yes (tie with maybe: the earlier column) right at 0.35, no wrong at 0.36 -> 0.5;
    # [0.733, 0.8): maybe for a gold no -> 0.0; [0.933, 1]: maybe at 0.95, right -> 1.0.
    assert [b.get_height() for b in bars] == [0.5, 0.0, 1.0]
    assert [b.get_x() for b in bars] == pytest.approx([1 / 3, 1 / 3 + 6 * 2 / 30, 1 / 3 + 9 * 2 / 30])
    assert [int(t.get_text()) for t in sorted(fig.axes[0].texts, key=lambda t: t.get_position()[0])] == [2, 1, 1]


def test_three_label_figures_all_draw_every_method(figures3, inputs3) -> None:
    assert set(figures3) == set(paths.FIGURE_NAMES)
    every = set(inputs3.test)
    for name in ("all_methods", "latency", "confusion", "coverage_accuracy", "reliability"):
        drawn = {a.get_gid() for a in figures3[name].findobj(lambda a: a.get_gid() in every)}
        assert drawn == every, name
    # The τ sweep of the three-label task starts at 1/3: every method answers everything there.
    for curve in inputs3.coverage.values():
        assert curve["tau"].iloc[0] == pytest.approx(0.33) and curve["coverage"].iloc[0] == 1.0
