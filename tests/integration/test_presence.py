"""The presence gate: the image-level check that empties the mask of an image without a lesion, from the
model's own latents, through the engine and ``wavegms-predict``; the confidence stays the model's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import BUSI
from napari_wavegms import cli
from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.inference.presence import PresenceGate, card_presence, features
from napari_wavegms.inference.segmenter import Segmentation, Segmenter
from napari_wavegms.zoo.registry import builtin_models, card_tta, suggest_model

ULTRASOUND = suggest_model("ultrasound")
#: Lesion-free BUSI scans the ultrasound model draws a mask on and whose mask its gate empties ("no lesion
#: found"): a test scan never trained on, and a training scan it is surer of (logits -3.78 and -3.91
#: against the card's -3.75, in float32 and bfloat16 alike); a lesion scan it keeps ("yes"); a lesion-free
#: test scan and a test lesion it is unsure of (kept and flagged for review; napari_wavegms.tuning.presence_fit).
GATED = ("normal_90", "normal_114")
LESION = "benign_3"
UNSURE_SCAN = "normal_19"
UNSURE_LESION = "benign_32"


@pytest.fixture(scope="module")
def gated() -> Segmenter:
    return Segmenter(ULTRASOUND, device="cpu")


@pytest.fixture(scope="module")
def ungated() -> Segmenter:
    return Segmenter(ULTRASOUND, device="cpu", presence=False)


def scan(name: str) -> np.ndarray:
    return read_image(BUSI / "images" / f"{name}.png")


class Plain(torch.nn.Module):
    """A segmentation model without Wave-GMS's latents."""

    image_size = 64

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def some_gate(n: int, threshold: float) -> PresenceGate:
    return PresenceGate((0.0,) * n, (1.0,) * n, (0.0,) * n, 0.0, threshold)


def test_a_gate_round_trips_through_its_card_record_and_refuses_bad_ones():
    gate = PresenceGate((0.5, 1.0), (2.0, 1.0), (1.0, -1.0), 0.25, -1.5, {"split": "validation"})
    assert PresenceGate.from_dict(gate.to_dict()) == gate
    logit = gate.logit(torch.tensor([[2.5, 3.0], [0.5, 1.0]]))
    torch.testing.assert_close(logit, torch.tensor([1.0 - 2.0 + 0.25, 0.25]))
    assert gate.absent(torch.tensor([[0.5, 5.0]])).tolist() == [True]  # logit -3.75 < -1.5
    with pytest.raises(ValueError, match="one value per feature"):
        PresenceGate((0.0,), (1.0, 1.0), (1.0, 1.0), 0.0, 0.0)
    with pytest.raises(ValueError, match="positive"):
        PresenceGate((0.0,), (0.0,), (1.0,), 0.0, 0.0)
    with pytest.raises(ValueError, match="malformed"):
        PresenceGate.from_dict({"centre": [0.0]})
    with pytest.raises(ValueError, match="expects 2 features, got 3"):
        gate.logit(torch.zeros(1, 3))


def test_a_gate_answers_lesion_no_lesion_or_unsure():
    """Below ``threshold``: no lesion (the mask is emptied); up to ``unsure_below``: unsure (kept, flagged);
    above: a lesion, unless the model drew nothing there (then one of the two is wrong: unsure)."""
    gate = PresenceGate((0.0,), (1.0,), (1.0,), 0.0, -2.0, unsure_below=1.0)
    assert [gate.answer(v, True) for v in (-2.5, -2.0, 0.5, 1.0, 3.0)] == ["no", "unsure", "unsure", "yes", "yes"]
    assert gate.answer(3.0, False) == "unsure" and gate.answer(-3.0, False) == "no"
    assert PresenceGate.from_dict(gate.to_dict()) == gate
    old = PresenceGate((0.0,), (1.0,), (1.0,), 0.0, -2.0)  # a card from before the unsure band: none
    assert old.unsure_below is None and old.answer(-1.9, True) == "yes"
    with pytest.raises(ValueError, match="unsure_below"):
        PresenceGate((0.0,), (1.0,), (1.0,), 0.0, 0.0, unsure_below=-1.0)


def test_review_trusts_no_lesion_and_flags_unsure():
    """A mask the gate emptied needs no review whatever the confidence of what the model drew; an unsure
    one always does; a stack's answer is unsure if any slice is, else lesion if any slice has one."""
    def result(conf, lesion):
        return Segmentation(np.zeros((2, 4, 4), np.uint8), np.array(conf, np.float32), np.zeros(2, bool),
                            0.8, None if lesion is None else np.array(lesion))

    assert not result([0.3, 0.95], ["no", "yes"]).review and result([0.3, 0.95], ["no", "yes"]).lesion_answer == "yes"
    assert result([0.99, 0.99], ["no", "unsure"]).review
    assert result([0.99, 0.99], ["unsure", "yes"]).lesion_answer == "unsure"
    assert result([0.3, 0.3], ["no", "no"]).lesion_answer == "no" and not result([0.3, 0.3], ["no", "no"]).review
    assert result([0.3, 0.95], ["yes", "yes"]).review  # a lesion drawn with low confidence: as before
    assert result([0.3, 0.95], None).review and result([0.3, 0.95], None).lesion_answer == ""
    assert result([1.0, 1.0], ["", ""]).lesion_answer == ""  # blank slices are not judged


def test_the_features_are_the_models_latents_at_its_own_size(gated):
    model = gated.model
    small, large = (gated.model_input(scan(LESION)), torch.nn.functional.interpolate(
        gated.model_input(scan(LESION)), scale_factor=2, mode="bilinear"))
    prob, mean, latent = model.predict_with_latents(small)
    torch.testing.assert_close(prob, model.predict(small))
    feats = features(mean, latent)
    assert feats.shape == (1, 5 * model.latent_channels) and torch.isfinite(feats).all()
    _, mean2, latent2 = model.predict_with_latents(large)  # resized to the model's size first
    assert features(mean2, latent2).shape == feats.shape


def test_only_the_ultrasound_card_has_a_gate_and_it_was_chosen_on_validation():
    for name in builtin_models():
        gate = card_presence(name)
        if name != ULTRASOUND:
            assert gate is None, f"{name} was trained without lesion-free images: no gate"
            continue
        assert gate is not None, f"{name}: run python -m napari_wavegms.tuning.presence_fit --write-card"
        chosen = gate.chosen_on
        assert "validation" in chosen["split"] and "napari_wavegms.tuning.presence_fit" in chosen["command"]
        assert "--folds-of bus-bra-256" in chosen["command"]  # thresholds judged on held-out scanners too
        for emptied in chosen["held_out_lesions_emptied"].values():  # "1/517": at most 1 in 200 of each source
            lost, of = map(int, emptied.split("/"))
            assert lost <= 0.005 * of
        assert gate.unsure_below is not None and gate.unsure_below > gate.threshold
        assert not gate.flips or card_tta(name)  # fitted on the features the segmenter computes
        assert len(gate.weights) == 5 * 32  # TAEF2's 32 latent channels
    assert card_presence("busi-wavegms-cpu64") == card_presence(ULTRASOUND)  # old names lead to it too
    assert card_presence(None) == card_presence(ULTRASOUND)  # the default model


def test_the_gate_empties_lesion_free_scans_and_keeps_lesions(gated, ungated):
    assert gated.presence is not None and ungated.presence is None
    for name in GATED:
        drawn = ungated.segment_many([scan(name)], with_confidence=True)[0]
        kept = gated.segment_many([scan(name)], with_confidence=True)[0]
        assert drawn.mask.any(), f"{name}: the model draws a mask here without the gate"
        assert not kept.mask.any(), f"{name}: the gate leaves this lesion-free scan empty"
        assert float(kept.confidence) == pytest.approx(float(drawn.confidence))  # still the model's own
    np.testing.assert_array_equal(gated(scan(LESION)), ungated(scan(LESION)))
    assert gated(scan(LESION)).any()


def test_three_answers_on_real_scans(gated):
    """No lesion: an empty mask that is not flagged for review, whatever the confidence of what the model
    drew; unsure: the mask is kept and flagged (a lesion-free scan and a real lesion alike); lesion: kept."""
    for name in GATED:
        found = gated.segment_many([scan(name)], with_confidence=True)[0]
        assert (found.lesion_answer, found.review, bool(found.mask.any())) == ("no", False, False), name
    for name in (UNSURE_SCAN, UNSURE_LESION):
        found = gated.segment_many([scan(name)], with_confidence=True)[0]
        assert (found.lesion_answer, found.review, bool(found.mask.any())) == ("unsure", True, True), name
    found = run_to_end(gated.segment(scan(LESION), with_confidence=True))  # the stack path says the same
    assert found.lesion_answer == "yes" and found.mask.any() and found.lesion.shape == ()


def test_a_gate_that_finds_nothing_anywhere_empties_every_mask_but_keeps_the_confidence(ungated):
    n = 5 * ungated.model.latent_channels
    always = Segmenter(ULTRASOUND, device="cpu", presence=some_gate(n, 1.0))  # logit 0 < 1: always absent
    never = Segmenter(ULTRASOUND, device="cpu", presence=some_gate(n, -1.0))
    image = scan(LESION)
    a, b = (s.segment_many([image], with_confidence=True)[0] for s in (always, never))
    assert not a.mask.any() and b.mask.any()
    assert float(a.confidence) == pytest.approx(float(b.confidence))
    assert not always.predict(always.model_input(image)).any()  # the public soft mask is emptied too
    with pytest.raises(ValueError, match="needs a Wave-GMS model"):
        Segmenter(Plain(), device="cpu", presence=some_gate(n, 0.0))


def test_a_gate_fitted_on_flipped_copies_judges_their_mean_features(ungated):
    """A gate with ``flips`` (the ultrasound card's, fitted with the card's test-time flips) sees the mean of
    the features of the image and its flipped copies, which the segmenter computes anyway; without flips
    the image's own features stand in. A gate whose one weight reads one feature shows which it saw."""
    from napari_wavegms.inference.segmenter import TTA_FLIPS

    assert PresenceGate.from_dict({**some_gate(2, 0.0).to_dict(), "flips": True}).flips
    assert not PresenceGate.from_dict({k: v for k, v in some_gate(2, 0.0).to_dict().items() if k != "flips"}).flips
    x = ungated.model_input(scan(LESION))
    with torch.inference_mode():
        copies = torch.cat([x, *(x.flip(d) for d in TTA_FLIPS)])
        all_feats = features(*ungated.model.predict_with_latents(copies)[1:])
    n = all_feats.shape[1]
    j = int((all_feats[0] - all_feats.mean(0)).abs().argmax())  # the feature the flips move most
    own, mean = float(all_feats[0, j]), float(all_feats[:, j].mean())
    between = (own + mean) / 2
    for flips, tta, seen in ((True, True, mean), (False, True, own), (True, False, own)):
        weights = tuple(1.0 if i == j else 0.0 for i in range(n))
        gate = PresenceGate((0.0,) * n, (1.0,) * n, weights, -between, 0.0, flips=flips)  # logit = f_j − between
        seg = Segmenter(ULTRASOUND, device="cpu", tta=tta, presence=gate)
        with torch.inference_mode():
            absent = bool(seg._predict(x)[1] < gate.threshold)
        assert absent == (seen < between), (flips, tta)


def test_wavegms_predict_applies_the_gate_and_no_presence_check_turns_it_off(tmp_path):
    """The CSV's ``lesion`` column: "no" for the emptied lesion-free scan (not flagged for review), "yes"
    for the lesion scan, "unsure" for the healthy scan the gate cannot clear (kept and flagged); empty
    without the check."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "normal.png").symlink_to(BUSI / "images" / f"{GATED[0]}.png")
    (src / "lesion.png").symlink_to(BUSI / "images" / f"{LESION}.png")
    (src / "unsure.png").symlink_to(BUSI / "images" / f"{UNSURE_SCAN}.png")
    common = ["--model", ULTRASOUND, "--device", "cpu", "--quiet"]
    assert cli.predict_main([str(src), str(tmp_path / "gated"), *common]) == 0
    assert cli.predict_main([str(src), str(tmp_path / "all"), *common, "--no-presence-check"]) == 0
    assert not read_image(tmp_path / "gated" / "normal.png").any()
    assert read_image(tmp_path / "all" / "normal.png").any()
    gated, kept = (summary_rows(tmp_path / run) for run in ("gated", "all"))
    assert (gated["normal.png"]["lesion"], gated["normal.png"]["review"]) == ("no", "no")
    assert gated["lesion.png"]["lesion"] == "yes" and read_image(tmp_path / "gated" / "lesion.png").any()
    assert (gated["unsure.png"]["lesion"], gated["unsure.png"]["review"]) == ("unsure", "yes")
    assert read_image(tmp_path / "gated" / "unsure.png").any()  # kept: a person decides
    assert {row["lesion"] for row in kept.values()} == {""}


def summary_rows(out) -> dict[str, dict[str, str]]:
    import csv

    (path,) = out.glob("wavegms-summary-*.csv")
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_frames_of_one_examination_share_a_held_out_fold():
    """BUSI has no patient IDs and holds near-copies (two frames of one examination); the gate's held-out
    folds keep them together, as BUS-BRA's published folds keep a patient's scans together."""
    from napari_wavegms.training.data import same_examination_groups, thumbnail
    from napari_wavegms.tuning.presence_fit import fold_of

    names = ["normal_97", "normal_98", "normal_41", "normal_47", "benign_3", "malignant_1", "bus_0001-l"]
    thumbs = np.stack([thumbnail(BUSI / "images" / f"{n}.png") for n in names[:-1]])
    groups = same_examination_groups(thumbs)
    assert groups[0] == groups[1] and groups[2] == groups[3]  # two pairs of frames
    assert len(set(groups.tolist())) == 4  # each other scan alone
    lesion = np.array([False, False, False, False, True, True, True])
    folds = fold_of(names, lesion, {"bus_0001-l": 3}, np.r_[groups, -1])
    assert folds[0] == folds[1] and folds[2] == folds[3] and folds[0] != folds[2]
    assert folds[-1] == 3  # a published fold wins
    alone = fold_of(names, lesion, {"bus_0001-l": 3})  # without groups, each image alone
    assert alone[0] != alone[1] or alone[2] != alone[3]
