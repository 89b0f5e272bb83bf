"""The package installs as a napari plugin: manifest shipped, discovered by npe2, importing stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


def test_npe2_lists_and_validates_the_installed_plugin():
    listed = subprocess.run([sys.executable, "-m", "npe2", "list", "--format", "json"],
                            capture_output=True, text=True, check=True)
    names = [p["name"] for p in json.loads(listed.stdout)]
    assert "napari-wavegms" in names
    valid = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-wavegms"],
                           capture_output=True, text=True)
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_manifest_in_package_is_the_top_level_one():
    import napari_wavegms

    shipped = Path(napari_wavegms.__file__).parent / "napari.yaml"
    assert shipped.read_text() == (REPO / "napari.yaml").read_text()


@pytest.mark.slow
def test_wheel_ships_the_manifest_and_entry_point(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True)
    wheel = next(tmp_path.glob("napari_wavegms-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        manifest = zf.read("napari_wavegms/napari.yaml").decode()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert manifest == (REPO / "napari.yaml").read_text()
    assert "[napari.manifest]" in entry_points and "napari_wavegms:napari.yaml" in entry_points
    assert "Classifier: Framework :: napari" in metadata
    assert not any(n.endswith((".pth", ".png", ".jpg")) for n in names)
    assert "napari_wavegms/inference/unknown_kind.npz" in names  # the open-set check's reference

    # A normal (non-editable) install of that wheel is found by npe2 with its manifest.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import importlib.metadata as md, npe2, napari_wavegms;"
        "mf = npe2.PluginManifest.from_distribution('napari-wavegms');"
        "print(mf.name, napari_wavegms.__file__, md.distribution('napari-wavegms').locate_file(''))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True)
    name, module_file, dist_root = out.stdout.split()
    assert name == "napari-wavegms"
    assert module_file.startswith(str(target)) and dist_root.startswith(str(target))


def test_importing_the_package_does_not_import_torch():
    code = "import sys, napari_wavegms; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_scripts_name_the_cli_functions_and_its_choices_are_the_engines():
    """pyproject's console scripts resolve to napari_wavegms.cli's functions; the CLI offers exactly
    the formats, conventions and recipes the engine accepts."""
    import importlib.metadata as md

    from napari_wavegms import cli
    from napari_wavegms.cli import predict, train
    from napari_wavegms.core.io import MASK_FORMATS
    from napari_wavegms.inference.batch import CONVENTIONS
    from napari_wavegms.training.config import RECIPES

    scripts = {ep.name: ep for ep in md.entry_points(group="console_scripts") if ep.name.startswith("wavegms-")}
    assert {name: ep.value for name, ep in scripts.items()} == {
        "wavegms-predict": "napari_wavegms.cli:predict_main",
        "wavegms-train": "napari_wavegms.cli:train_main",
        "wavegms-eval": "napari_wavegms.cli:eval_main",
    }
    assert scripts["wavegms-predict"].load() is cli.predict_main
    choices = {a.dest: a.choices for a in predict.build_parser()._actions if a.choices}
    assert tuple(choices["fmt"]) == MASK_FORMATS and tuple(choices["convention"]) == CONVENTIONS
    recipes = next(a.choices for a in train.build_parser()._actions if a.dest == "recipe")
    assert list(recipes) == list(RECIPES)
