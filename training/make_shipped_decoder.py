"""Convert the frozen TAEF2 decoder into the copy shipped inside the package, once.

    python training/make_shipped_decoder.py [--weights DIR]

Reads ``taef2_decoder.pth`` (sha256-checked against the weights registry) with
``torch.load(weights_only=True)``, stores its tensors unchanged as float16 (the published file is
float16 already: nothing is rounded) in ``src/napari_wavegms/builtin/taef2_decoder.safetensors`` with
the original TAESD keys, copies the MIT licence notice ``LICENSE-taesd`` beside it, and prints the
tensors' sha256 to pin in :data:`napari_wavegms.weights.TINY_VAES` (``shipped_sha256``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from napari_wavegms import weights
from napari_wavegms.model.tiny_vae import tensor_sha256

DEFAULT_WEIGHTS = Path(os.environ.get(weights.WEIGHTS_ENV, Path(__file__).resolve().parents[2] / "shared" / "weights"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                   help="folder with taef2_decoder.pth and LICENSE-taesd")
    args = p.parse_args(argv)

    spec = weights.TINY_VAES["taef2"]
    source = weights.fetch(spec.decoder, args.weights, allow_download=False)
    state = torch.load(source, map_location="cpu", weights_only=True)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
    changed = [k for k, v in state.items() if not torch.equal(v.to(torch.float16).to(v.dtype), v)]
    if changed:
        print(f"note: {len(changed)} tensors were not float16 and were rounded", file=sys.stderr)
    target = weights.SHIPPED_DIR / spec.shipped_decoder
    save_file(tensors, str(target), metadata={
        "source": f"{spec.decoder.url} (sha256 {spec.decoder.sha256})",
        "licence": "MIT, Copyright (c) 2023 Ollin Boer Bohan; see LICENSE-taesd beside this file",
    })
    target.chmod(0o644)
    shutil.copyfile(args.weights / "LICENSE-taesd", weights.SHIPPED_DIR / "LICENSE-taesd")
    print(f"{target} ({target.stat().st_size / 1e6:.2f} MB), tensors sha256 {tensor_sha256(tensors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
