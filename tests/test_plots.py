"""Every plot helper returns a matplotlib figure that renders to a non-empty PNG with the expected axes."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import calibration_models as cm  # noqa: E402
from bayesinf import check, plots  # noqa: E402
from bayesinf.calibration import CalibrationReport  # noqa: E402

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def post():
    return cm.fitted("normal_regression", "normal")


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(0)
    return CalibrationReport.from_draws(rng.normal(size=(300, 400)), rng.normal(size=300))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    plt.close(fig)
    return buf.getvalue()


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


@pytest.mark.parametrize("name, min_axes", [
    ("plot_trace", 6),     # a, b (2 panels), sigma: density + trace per variable
    ("plot_rank", 3),
    ("plot_forest", 2),    # labels + forest columns
    ("plot_ppc", 1),
    ("plot_loo_pit", 1),
])
def test_arviz_plots_render(post, name, min_axes):
    fig = getattr(plots, name)(post)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(_visible_axes(fig)) >= min_axes
    png = _png(fig)
    assert png.startswith(PNG) and len(png) > 1000


def test_calibration_plots_render(report):
    fig = report.plot()
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xlabel() == "nominal coverage" and fig.axes[1].get_xlabel() == "PIT"
    assert _png(fig).startswith(PNG)
    for fn in (plots.plot_reliability, plots.plot_pit):
        fig = fn(report)
        assert len(fig.axes) == 1 and len(_png(fig)) > 1000


def test_sbc_plot_has_one_axis_per_parameter():
    result = check.sbc(cm.correlated, cm.collinear_design(20, 0.95, 0), n_simulations=10, seed=0)
    fig = result.plot()
    assert len(fig.axes) == 2
    assert len(_png(fig)) > 1000
