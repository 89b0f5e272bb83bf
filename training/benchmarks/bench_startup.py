"""How much does napari-wavegms add to napari's start-up, and how long does the first mask take? Prints
seconds, median of several runs.

Each measurement is a fresh Python process (so nothing is cached in memory) that imports napari and
creates a viewer (``show=False``; plugin discovery, manifest reading and menu registration included),
once with the plugin enabled and once with it disabled through napari's own setting
(``plugins.disabled_plugins`` in a temporary settings file given by ``NAPARI_CONFIG``). A third case
also opens the three Wave-GMS widgets and reports whether torch got imported (it must not be).

``--first-mask`` measures the first Segment click instead: a fresh process opens a real BUSI scan
(malignant_5) in a shown viewer, opens the Segment dock, waits ``think`` seconds (the user reading the
dock) and clicks Run; the time from the click to the mask in the layer list is reported, with the
background warm-up off (``WAVEGMS_WARMUP=0``: what every first click cost before it existed) and on, in
the same run, interleaved. The longest pause of the GUI thread while the user "thinks" is reported too
(the warm-up must not freeze the window).

Run under a display, e.g. ``xvfb-run -a python training/benchmarks/bench_startup.py --repeats 5``.
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


FIRST_MASK = textwrap.dedent("""
    import json, sys, time
    import napari
    from qtpy.QtWidgets import QApplication
    from napari_wavegms.core.io import read_image

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(read_image(IMAGE), name="scan")
    t_dock = time.perf_counter()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Segment")
    longest, last = 0.0, time.perf_counter()
    while time.perf_counter() - t_dock < THINK:  # the user reads the dock; the GUI must stay responsive
        app.processEvents()
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
        time.sleep(0.005)
    t_click = time.perf_counter()
    job = widget.run()
    while job.running:
        app.processEvents()
        time.sleep(0.002)
    first = time.perf_counter() - t_click
    print(json.dumps({"first_mask": first, "status": job.status, "longest_pause": longest,
                      "model": widget.model.model, "torch": "torch" in sys.modules}))
    viewer.close()
""")


def first_mask_once(warmup: bool, think: float, image: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "settings.yaml"
        settings.write_text("{}\n")
        env = {**os.environ, "NAPARI_CONFIG": str(settings), "WAVEGMS_CONFIG_DIR": tmp,
               "WAVEGMS_WARMUP": "1" if warmup else "0"}
        code = FIRST_MASK.replace("IMAGE", repr(str(image))).replace("THINK", repr(think))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"the first-mask probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_mask(repeats: int, thinks: list[float], image: Path) -> None:
    cases = [(warmup, think) for think in thinks for warmup in (False, True)]
    results: dict[tuple[bool, float], list[dict]] = {case: [] for case in cases}
    first_mask_once(False, 0.0, image)  # warm the file-system cache once
    for _ in range(repeats):  # interleaved, so a busy machine slows every case alike
        for warmup, think in cases:
            results[warmup, think].append(first_mask_once(warmup, think, image))
    for warmup, think in cases:
        runs = results[warmup, think]
        first = statistics.median(r["first_mask"] for r in runs)
        pause = max(r["longest_pause"] for r in runs)
        each = ", ".join(f"{r['first_mask']:.2f}" for r in runs)
        print(f"click {think:4.1f} s after the dock opened, warm-up {'on ' if warmup else 'off'}: first mask "
              f"{first:5.2f} s after the click (median of {len(runs)}: "
              f"{each}); longest GUI pause before the click "
              f"{pause:4.2f} s; model {runs[0]['model']}; {runs[0]['status']}")


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
    parser.add_argument("--first-mask", action="store_true",
                        help="time the first Segment click, background warm-up off and on")
    parser.add_argument("--think", type=float, nargs="+", default=[0.0, 3.0, 6.0],
                        help="seconds between the dock opening and the click (--first-mask)")
    parser.add_argument("--image", type=Path,
                        default=Path(__file__).resolve().parents[3] / "shared/data/busi/images/malignant_5.png")
    args = parser.parse_args(argv)
    if args.first_mask:
        first_mask(args.repeats, args.think, args.image)
        return 0
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
