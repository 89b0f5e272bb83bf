"""The release steps (napari_wavegms.tuning) run as `python -m` modules and never load Qt or napari."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import napari_wavegms.tuning

MODULES = sorted(m.name for m in pkgutil.iter_modules(napari_wavegms.tuning.__path__) if m.name != "common")


def test_every_release_step_is_listed():
    assert {"builtin", "tta_choice", "postprocess_choice", "presence_fit", "modality_fit",
            "shipped_tiny_vae"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_step_shows_its_help_without_qt_or_napari(module: str):
    name = f"napari_wavegms.tuning.{module}"
    code = (f"import sys, runpy; sys.argv = ['{module}', '--help']\n"
            f"try:\n    runpy.run_module('{name}', run_name='__main__')\nexcept SystemExit as stop:\n"
            "    assert stop.code in (0, None), stop.code\n"
            "loaded = [m for m in ('napari', 'PyQt6', 'qtpy', 'magicgui') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
