"""Convert the frozen TAEF2 decoder *and encoder* into the copies shipped inside the package, once.

    python -m napari_wavegms.tuning.shipped_tiny_vae [--weights DIR]

Both halves ship: inference needs the decoder, and training needs the encoder's target latents, so both
work offline from a pip install.

For each of ``taef2_decoder.pth`` and ``taef2_encoder.pth`` it reads the file (sha256-checked against
the weights registry) with ``torch.load(weights_only=True)``, stores its tensors unchanged as float16
(the published files are float16 already: nothing is rounded) in
``src/napari_wavegms/zoo/builtin/taef2_{decoder,encoder}.safetensors`` with the original TAESD keys, copies
the MIT licence notice ``LICENSE-taesd`` beside them, and prints each file's tensors sha256 to pin in
:data:`napari_wavegms.zoo.downloads.TINY_VAES` (``shipped_sha256`` and ``shipped_encoder_sha256``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from napari_wavegms.network.tiny_vae import tensor_sha256
from napari_wavegms.tuning.common import shared_folder
from napari_wavegms.zoo import downloads as weights

DEFAULT_WEIGHTS = shared_folder(weights.WEIGHTS_ENV, "weights")


def ship(remote: weights.RemoteFile, target: Path, folder: Path) -> str:
    """Write ``remote`` (found in ``folder``) as float16 safetensors at ``target``; its tensors sha256."""
    source = weights.fetch(remote, folder, allow_download=False)
    state = torch.load(source, map_location="cpu", weights_only=True)
    tensors = {k: v.to(torch.float16).contiguous() for k, v in state.items()}
    changed = [k for k, v in state.items() if not torch.equal(v.to(torch.float16).to(v.dtype), v)]
    if changed:
        print(f"note: {remote.name}: {len(changed)} tensors were not float16 and were rounded", file=sys.stderr)
    save_file(tensors, str(target), metadata={
        "source": f"{remote.url} (sha256 {remote.sha256})",
        "licence": "MIT, Copyright (c) 2023 Ollin Boer Bohan; see LICENSE-taesd beside this file",
    })
    target.chmod(0o644)
    return tensor_sha256(tensors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                   help="folder with taef2_decoder.pth, taef2_encoder.pth and LICENSE-taesd")
    args = p.parse_args(argv)

    spec = weights.TINY_VAES["taef2"]
    for remote, file, pin in ((spec.decoder, spec.shipped_decoder, "shipped_sha256"),
                              (spec.encoder, spec.shipped_encoder, "shipped_encoder_sha256")):
        target = weights.SHIPPED_DIR / file
        sha = ship(remote, target, args.weights)
        print(f"{target} ({target.stat().st_size / 1e6:.2f} MB), tensors sha256 {sha} (pin as {pin})")
    shutil.copyfile(args.weights / "LICENSE-taesd", weights.SHIPPED_DIR / "LICENSE-taesd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
