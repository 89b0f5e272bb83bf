"""The training-time estimate: measured steps, scaled to the run, and said as a person would."""

from __future__ import annotations

import pytest

from napari_wavegms import training_cost
from napari_wavegms.training_cost import Estimate, estimate_training, seconds_per_image


def test_estimate_scales_with_epochs_pairs_and_budget():
    one = estimate_training(64, 1, 100, device="cpu")
    assert one.seconds > 0 and one.device.startswith("cpu (")
    # the per-image cost is measured once and cached: more epochs or pairs scale it exactly
    assert estimate_training(64, 10, 100, device="cpu").seconds == pytest.approx(10 * one.seconds)
    assert estimate_training(64, 1, 300, device="cpu").seconds == pytest.approx(3 * one.seconds)
    assert estimate_training(64, 1000, 100, device="cpu", time_budget_s=60).seconds == 60
    # validation adds to it
    assert estimate_training(64, 1, 100, device="cpu", n_val=30).seconds > one.seconds


def test_bigger_images_cost_more_and_the_paper_recipe_more_than_fast():
    small, large = seconds_per_image(32, device="cpu"), seconds_per_image(64, device="cpu")
    assert large > 1.2 * small  # 4× the pixels (fixed costs weigh more in small steps)
    assert seconds_per_image(64, "paper", device="cpu") > seconds_per_image(64, "fast", device="cpu")
    assert (32, "fast", "cpu") in training_cost._PER_IMAGE


@pytest.mark.parametrize(("seconds", "text"), [
    (4, "about 10 s on cpu (2 threads)"), (44, "about 40 s on cpu (2 threads)"),
    (12 * 60 + 10, "about 12 min on cpu (2 threads)"), (3 * 3600, "about 3.0 h on cpu (2 threads)"),
    (5 * 86400, "about 5 days on cpu (2 threads)"),
])
def test_estimate_reads_as_a_person_would_say_it(seconds, text):
    assert Estimate(seconds, "cpu (2 threads)").text() == text
