"""How much does napari-wavegms add to napari's start-up? Prints seconds, median of several runs.

Each measurement is a fresh Python process (so nothing is cached in memory) that imports napari and
creates a viewer (``show=False``; plugin discovery, manifest reading and menu registration included),
once with the plugin enabled and once with it disabled through napari's own setting
(``plugins.disabled_plugins`` in a temporary settings file given by ``NAPARI_CONFIG``). A third case
also opens the three Wave-GMS widgets and reports whether torch got imported (it must not be).

Run under a display, e.g. ``xvfb-run -a python training/bench_startup.py --repeats 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PROBE = textwrap.dedent("""
    import sys, time, json
    t0 = time.perf_counter()
    import napari
    t_import = time.perf_counter() - t0
    viewer = napari.Viewer(show=False)
    t_viewer = time.perf_counter() - t0
    widgets = 0.0
    if OPEN_WIDGETS:
        t1 = time.perf_counter()
        for name in ("Segment", "Train", "Batch"):
            viewer.window.add_plugin_dock_widget("napari-wavegms", name)
        widgets = time.perf_counter() - t1
    from npe2 import PluginManager
    enabled = PluginManager.instance().is_disabled("napari-wavegms") is False
    print(json.dumps({"import": t_import, "viewer": t_viewer, "widgets": widgets, "enabled": enabled,
                      "torch": "torch" in sys.modules}))
    viewer.close()
""")


def run_once(disabled: bool, open_widgets: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "settings.yaml"
        settings.write_text("plugins:\n  disabled_plugins: [napari-wavegms]\n" if disabled else "{}\n")
        env = {**os.environ, "NAPARI_CONFIG": str(settings)}
        code = PROBE.replace("OPEN_WIDGETS", str(open_widgets))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cases = {
        "plugin disabled": (True, False),
        "plugin enabled": (False, False),
        "enabled + 3 widgets opened": (False, True),
    }
    results: dict[str, list[dict]] = {label: [] for label in cases}
    run_once(False, False)  # warm the file-system cache once
    for _ in range(args.repeats):  # interleaved, so a busy machine slows every case alike
        for label, (disabled, widgets) in cases.items():
            results[label].append(run_once(disabled, widgets))
    for label, (_disabled, widgets) in cases.items():
        runs = results[label]
        viewer = statistics.median(r["viewer"] for r in runs)
        opened = statistics.median(r["widgets"] for r in runs)
        print(
            f"{label:28s} napari import + Viewer: {viewer:6.2f} s (median of {len(runs)})"
            + (f"; opening the widgets: {opened:5.2f} s" if widgets else "")
            + f"; plugin enabled: {runs[0]['enabled']}; torch imported: {any(r['torch'] for r in runs)}"
        )
    base = statistics.median(r["viewer"] for r in results["plugin disabled"])
    with_plugin = statistics.median(r["viewer"] for r in results["plugin enabled"])
    print(
        f"start-up cost of the plugin: {with_plugin - base:+.2f} s ({(with_plugin / base - 1) * 100:+.0f} %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
