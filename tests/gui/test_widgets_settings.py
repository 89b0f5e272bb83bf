"""The Segment widget's settings as one typed object: what the widget saves is what the menu command
reads, and settings files written by earlier versions (or broken by hand) still open."""

from __future__ import annotations

import json

from napari_wavegms.gui import settings as _settings
from napari_wavegms.gui.settings import Scope, SegmentSettings


def test_settings_saved_by_an_earlier_version_load_as_they_were(_isolated_settings):
    earlier = {"model": "some/ckpt.safetensors", "model_by_hand": True, "device": "cpu", "threshold": 0.3,
               "tta": False, "scope": "current slice", "presence": False, "cleanup_default": False,
               "fill_holes": True, "keep_largest": False, "min_area": 2.0}
    (_isolated_settings / "settings.json").write_text(json.dumps({"segment": earlier}))
    loaded = SegmentSettings.load()
    assert loaded.scope is Scope.CURRENT_SLICE and not loaded.whole_stack
    assert loaded.threshold == 0.3 and loaded.model_by_hand and loaded.tta is False
    assert loaded.cleanup() == {"fill_holes": True, "keep_largest": False, "min_area": 2.0}
    assert loaded.to_dict() == earlier  # written back under the same keys, with the same values


def test_missing_or_unreadable_values_fall_back_to_the_defaults(_isolated_settings):
    (_isolated_settings / "settings.json").write_text(json.dumps({"segment": {
        "threshold": "high", "scope": "every other slice", "presence": "yes", "unknown": 1}}))
    assert SegmentSettings.load() == SegmentSettings()
    (_isolated_settings / "settings.json").write_text("{not json")
    assert SegmentSettings.load() == SegmentSettings()
    defaults = SegmentSettings()
    assert defaults.whole_stack and defaults.tta is None and defaults.cleanup() is None


def test_saving_keeps_the_other_sections(_isolated_settings):
    _settings.save("general", {"cache_dir": "/tmp/x"})
    SegmentSettings(threshold=0.7, scope=Scope.CURRENT_SLICE).save()
    data = json.loads((_isolated_settings / "settings.json").read_text())
    assert data["general"] == {"cache_dir": "/tmp/x"}
    assert data["segment"]["scope"] == "current slice" and data["segment"]["threshold"] == 0.7
