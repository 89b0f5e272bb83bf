"""``wavegms-train`` under torchrun that also writes each rank's final trainable weights (``rank{R}.safetensors``
in the output folder), so a test can check that DistributedDataParallel kept the ranks identical: only
rank 0 writes checkpoints, and without the DDP wrapper each rank would drift on its own half of the data."""

from __future__ import annotations

import os
import sys

from safetensors.torch import save_file

from napari_wavegms.cli import train_main
from napari_wavegms.training import loop as training

runs = []
build = training._build_training


def build_and_keep(run) -> None:
    build(run)
    runs.append(run)


training._build_training = build_and_keep

if __name__ == "__main__":
    status = train_main(sys.argv[1:])
    model = runs[0].model
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(weights, os.path.join(runs[0].out, f"rank{os.environ.get('RANK', '0')}.safetensors"))
    sys.exit(status)
