"""The training-time estimate: measured steps, scaled to the run, and said as a person would."""

from __future__ import annotations

import pytest

from napari_wavegms.training import cost as training_cost
from napari_wavegms.training.cost import Estimate, estimate_training, seconds_per_image


def test_estimate_scales_with_epochs_pairs_and_budget():
    one = estimate_training(64, 1, 100, device="cpu")
    assert one.seconds > 0 and one.device.startswith("cpu (")
    # the per-image cost is measured once and cached: more epochs or pairs scale it exactly
    assert estimate_training(64, 10, 100, device="cpu").seconds == pytest.approx(10 * one.seconds)
    assert estimate_training(64, 1, 300, device="cpu").seconds == pytest.approx(3 * one.seconds)
    assert estimate_training(64, 1000, 100, device="cpu", time_budget_s=60).seconds == 60
    # validation adds to it
    assert estimate_training(64, 1, 100, device="cpu", n_val=30).seconds > one.seconds


def test_each_recipe_is_measured_at_the_sizes_it_trains_at(monkeypatch):
    monkeypatch.setattr(training_cost, "_PER_IMAGE", {})
    estimate_training(64, 1, 10, device="cpu")  # fast: the first half at 32², then 64²
    assert set(training_cost._PER_IMAGE) == {(64, "fast", "cpu"), (32, "fast", "cpu")}
    estimate_training(64, 1, 10, recipe="paper", device="cpu")  # paper: 64² throughout
    assert (64, "paper", "cpu") in training_cost._PER_IMAGE and (32, "paper", "cpu") not in training_cost._PER_IMAGE
    assert all(v > 0 for v in training_cost._PER_IMAGE.values())
    # seconds_per_image returns the cached measurement rather than measuring again
    training_cost._PER_IMAGE[(64, "fast", "cpu")] = 123.0
    assert seconds_per_image(64, device="cpu") == 123.0


@pytest.mark.parametrize(("seconds", "text"), [
    (4, "about 10 s on cpu (2 threads)"), (44, "about 40 s on cpu (2 threads)"),
    (12 * 60 + 10, "about 12 min on cpu (2 threads)"), (3 * 3600, "about 3.0 h on cpu (2 threads)"),
    (5 * 86400, "about 5 days on cpu (2 threads)"),
])
def test_estimate_reads_as_a_person_would_say_it(seconds, text):
    assert Estimate(seconds, "cpu (2 threads)").text() == text
