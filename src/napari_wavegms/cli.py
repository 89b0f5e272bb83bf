"""The command line: ``wavegms-predict``, ``wavegms-train`` and ``wavegms-eval``, thin over the engine.

Exit status: 0 success, 1 when some inputs failed, 2 for a usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys


# ---------------------------------------------------------------- wavegms-predict (inference/batch)
def predict_main(argv: list[str] | None = None) -> int:
    """``wavegms-predict INPUT OUTPUT [--model NAME_OR_PATH] [--pattern GLOB] [--format png|tif] [--device D]``."""
    raise NotImplementedError  # written with batch.py


# ---------------------------------------------------------------- wavegms-train (training)
def train_main(argv: list[str] | None = None) -> int:
    """``wavegms-train CONFIG [--data DIR] [--output DIR] [--epochs N] [--image-size S] [--batch-size B] [--device D]``."""
    raise NotImplementedError  # written with training.py


# ---------------------------------------------------------------- wavegms-eval (metrics)
def eval_main(argv: list[str] | None = None) -> int:
    """``wavegms-eval MODEL DATA [--split LISTFILE] [--device D] [--csv FILE] [--json]``."""
    raise NotImplementedError  # written with training.py / metrics.py


if __name__ == "__main__":  # pragma: no cover
    sys.exit(predict_main())
