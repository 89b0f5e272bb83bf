"""The command line: ``wavegms-predict``, ``wavegms-train`` and ``wavegms-eval``, thin over the engine.

Each command is a module of its own (:mod:`.predict`, :mod:`.train`, :mod:`.evaluate`); the console
scripts in pyproject.toml name the functions re-exported here. Exit status: 0 success, 1 when some
inputs failed, 2 for a usage error (argparse's convention), 130 cancelled.
"""

from __future__ import annotations

from napari_wavegms.cli.evaluate import eval_main
from napari_wavegms.cli.predict import predict_main
from napari_wavegms.cli.train import train_main

__all__ = ["eval_main", "predict_main", "train_main"]
