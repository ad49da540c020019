"""Focus metrics on synthetic fields and the autofocus searches on synthetic focus curves."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.acquisition.cancel import CancelToken
from agent.acquisition.config import FocusConfig
from agent.acquisition.errors import Cancelled
from agent.acquisition.focus_metrics import contrast, measure_focus, sharpness
from agent.acquisition.focus_search import (
    NO_TEXTURE,
    FocusSample,
    SearchParams,
    fit_peak,
    local_focus,
    merge,
    search_focus,
)
from tests.acquisition_synthetic import CurveProbe, render, transmission_field

METRICS = ["laplacian", "tenengrad", "brenner", "variance"]


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return transmission_field(0.45, seed=3)


# -- metrics -----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_metric_falls_with_defocus(smear: np.ndarray, metric: str) -> None:
    scores = [
        sharpness(render(smear, blur_sigma_px=s, noise=0.01), metric, 2)  # type: ignore[arg-type]
        for s in (0.0, 1.5, 3.0, 6.0, 12.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores


@pytest.mark.parametrize("metric", METRICS)
def test_metric_ignores_brightness(smear: np.ndarray, metric: str) -> None:
    bright = sharpness(render(smear, light=1.0, blur_sigma_px=1.0), metric, 2)  # type: ignore[arg-type]
    dim = sharpness(render(smear, light=0.45, blur_sigma_px=1.0), metric, 2)  # type: ignore[arg-type]
    assert dim == pytest.approx(bright, rel=0.05)


def test_empty_field_has_no_texture_whatever_the_noise() -> None:
    glass = transmission_field(0.0, nuclei=0)
    config = FocusConfig()
    for noise in (0.0, 0.01, 0.03):
        m = measure_focus(
            render(glass, noise=noise, seed=1),
            metric="laplacian",
            downsample=2,
            coarse_metric="variance",
            coarse_downsample=8,
            min_contrast=config.min_contrast,
        )
        assert not m.textured, (noise, m)


def test_cells_have_texture_even_out_of_focus(smear: np.ndarray) -> None:
    config = FocusConfig()
    for sigma in (0.0, 5.0, 10.0):
        assert contrast(render(smear, blur_sigma_px=sigma, noise=0.02)) > config.min_contrast


def test_black_image_scores_zero_not_nan() -> None:
    black = np.zeros((120, 160, 3), np.uint8)
    for metric in METRICS:
        assert sharpness(black, metric, 2) == 0.0  # type: ignore[arg-type]
    assert contrast(black) == 0.0


def test_grey_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="BGR"):
        sharpness(np.zeros((10, 10), np.uint8), "laplacian", 1)


# -- peak fit ----------------------------------------------------------------------------


def _sample(z: float, score: float) -> FocusSample:
    return FocusSample(z, score, score, True)


def test_gaussian_fit_is_exact_on_three_points() -> None:
    probe = CurveProbe(12.34, width_um=1.5)
    peak = fit_peak([_sample(z, probe.score(z)) for z in (11.5, 12.5, 13.5)])
    assert peak.at_edge == 0
    # exact for a pure Gaussian; the floor of 1 moves it a little
    assert peak.z_um == pytest.approx(12.34, abs=0.03)
    assert peak.local_ratio > 1.0


@pytest.mark.parametrize(("zs", "edge"), [((10, 11, 12), 1), ((14, 15, 16), -1)])
def test_fit_reports_peak_at_an_edge(zs: tuple[float, ...], edge: int) -> None:
    probe = CurveProbe(13.0)
    peak = fit_peak([_sample(z, probe.score(z)) for z in zs])
    assert peak.at_edge == edge


def test_fit_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        fit_peak([])


# -- searches ----------------------------------------------------------------------------


def _params(**overrides: float) -> SearchParams:
    """A stage with a fine z step (0.01 um) unless a test says otherwise."""
    values: dict[str, float] = {"z_step_um": 0.01, "check_step_um": 0.8}
    values.update(overrides)
    return SearchParams(FocusConfig(**values), 0.0, 5_000.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("error_um", [0.0, 0.1, -0.2])
def test_good_prediction_costs_three_images(error_um: float) -> None:
    probe = CurveProbe(2500.0, width_um=1.8)
    result = local_focus(probe, 2500.0 + error_um, _params())
    assert result.ok, result.reason
    assert result.images == 3
    assert result.final is not None
    assert abs(result.final.z_um - 2500.0) <= _params().focus.accept_tolerance_um + abs(error_um)
    assert abs(result.z_um - 2500.0) < 0.1


def test_local_check_takes_one_more_image_when_the_peak_lies_between_samples() -> None:
    probe = CurveProbe(2500.0, width_um=1.8)
    result = local_focus(probe, 2500.3, _params())
    assert result.ok
    assert result.images == 4
    assert result.final is not None
    assert result.final.z_um == pytest.approx(2500.0, abs=0.05)


def test_local_check_follows_a_peak_past_its_edge() -> None:
    probe = CurveProbe(2502.0, width_um=1.8)
    result = local_focus(probe, 2500.0, _params(check_step_um=0.8, max_walk_steps=3))
    assert result.ok, result.reason
    assert result.final is not None
    assert abs(result.final.z_um - 2502.0) < 0.3
    walk = probe.visited[:4]
    assert walk == sorted(walk)  # followed upwards, never back down through backlash


def test_local_check_fails_far_from_focus() -> None:
    probe = CurveProbe(2530.0, width_um=1.8)
    result = local_focus(probe, 2500.0, _params())
    assert not result.ok
    assert "outside" in result.reason or "flat" in result.reason


def test_local_check_rejects_a_weak_peak_against_the_reference() -> None:
    probe = CurveProbe(2500.0, width_um=1.8, height=5.0)
    result = local_focus(probe, 2500.0, _params(), reference_score=200.0)
    assert not result.ok
    assert "below" in result.reason


def test_empty_field_is_not_searched() -> None:
    probe = CurveProbe(2500.0, textured=False)
    result = local_focus(probe, 2500.0, _params())
    assert not result.ok and result.reason == NO_TEXTURE
    assert result.images == 3


@pytest.mark.parametrize("seed", range(5))
def test_search_finds_focus_in_a_noisy_curve(seed: int) -> None:
    rng = np.random.default_rng(seed)
    peak = 2500.0 + float(rng.uniform(-100, 100))
    probe = CurveProbe(peak, width_um=1.8, noise=0.03, seed=seed)
    result = search_focus(probe, 2500.0, 300.0, _params())
    assert result.ok, result.reason
    assert result.final is not None
    assert abs(result.final.z_um - peak) < 0.5
    assert result.images <= _params().focus.max_images_per_field


def test_search_of_a_flat_curve_fails() -> None:
    probe = CurveProbe(9000.0, floor=50.0, height=0.0)
    result = search_focus(probe, 2500.0, 100.0, _params())
    assert not result.ok
    assert "no focus peak" in result.reason


def test_search_does_not_leave_the_z_limits() -> None:
    probe = CurveProbe(-50.0)
    params = _params()
    result = search_focus(probe, 20.0, 300.0, params)
    assert min(probe.visited) >= params.z_min_um
    assert not result.ok


def test_search_respects_the_image_budget() -> None:
    probe = CurveProbe(2500.0)
    result = search_focus(probe, 2500.0, 300.0, _params(max_images_per_field=10))
    assert not result.ok
    assert result.images == 10
    assert "budget" in result.reason


def test_search_sweeps_upwards() -> None:
    probe = CurveProbe(2510.0)
    search_focus(probe, 2500.0, 100.0, _params())
    coarse = probe.visited[:13]
    assert coarse == sorted(coarse)


def test_cancel_stops_a_search_between_images() -> None:
    token = CancelToken()
    probe = CurveProbe(2500.0)

    def cancelling(z: float) -> FocusSample:
        if len(probe.visited) == 4:
            token.cancel("operator")
        return probe(z)

    with pytest.raises(Cancelled, match="operator"):
        search_focus(cancelling, 2500.0, 300.0, _params(), cancel=token)
    assert len(probe.visited) == 5


def test_fallback_counts_both_searches() -> None:
    probe = CurveProbe(2530.0, width_um=1.8)
    first = local_focus(probe, 2500.0, _params())
    second = search_focus(probe, 2500.0, 80.0, _params())
    merged = merge(first, second)
    assert merged.ok and merged.method == "search"
    assert merged.images == first.images + second.images


@pytest.mark.parametrize("peak", [2500.2, 2500.45, 2500.55, 2499.7, 2501.3])
def test_on_a_1_um_stage_the_nearest_step_to_the_peak_is_kept(peak: float) -> None:
    probe = CurveProbe(peak, width_um=1.8)
    params = _params(z_step_um=1.0, check_step_um=1.0)
    result = local_focus(probe, 2500.0, params)
    assert result.ok, result.reason
    assert all(z == round(z) for z in probe.visited)  # only positions the stage can reach
    assert result.final is not None
    assert result.final.z_um == round(peak)
    assert result.images == 3 + (abs(peak - 2500.0) > 0.5)  # one more when a walk was needed


def test_snap_stays_within_the_limits() -> None:
    params = SearchParams(FocusConfig(z_step_um=0.3), 0.0, 100.0)
    assert params.snap(100.0) <= 100.0
    assert params.snap(-5.0) >= 0.0
    assert params.snap(50.04) == pytest.approx(50.1)
