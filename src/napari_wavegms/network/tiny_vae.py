"""The frozen Tiny-VAE: diffusers' ``AutoencoderTiny`` plus the ``pool`` branch that TAEF2 adds.

It loads (a) a diffusers-format folder or hub name (``madebyollin/taesd``) and (b) the original
TAESD-family ``*_encoder.pth`` / ``*_decoder.pth`` pair, read with ``torch.load(weights_only=True)``
so no code is ever unpickled. TAEF2's blocks at 1/8 resolution first add a pooled branch
(``x + pool(x)``, 1×1 conv → GroupNorm → ReLU → 1×1 conv), which diffusers lacks; we subclass its
block rather than re-implementing the autoencoder.

Images are in [0, 1] here (diffusers uses [-1, 1]); latents are unscaled.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock
from torch import nn
from torch.nn import functional as F

from napari_wavegms.zoo import downloads as weights

log = logging.getLogger(__name__)

class TinyVAEError(ValueError):
    """Weights that do not form a TAESD-family autoencoder."""


class PooledTinyBlock(AutoencoderTinyBlock):
    """TAEF2's residual block: ``x = x + pool(x)`` before the plain TAESD block."""

    def __init__(self, channels: int, act_fn: str = "relu", pool_width: int = 256, groups: int = 4) -> None:
        super().__init__(channels, channels, act_fn)
        self.pool = nn.Sequential(
            nn.Conv2d(channels, pool_width, 1, bias=False),
            nn.GroupNorm(groups, pool_width),
            nn.ReLU(),
            nn.Conv2d(pool_width, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + self.pool(x))


def _lowres_block_indices(layers: nn.Sequential, encoder: bool) -> list[int]:
    """Indices of the blocks that run at 1/8 resolution: after the encoder's last strided conv,
    before the decoder's first upsample."""
    if encoder:
        last_down = max(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d) and m.stride == (2, 2))
        return [i for i, m in enumerate(layers) if i > last_down and isinstance(m, AutoencoderTinyBlock)]
    first_up = min(i for i, m in enumerate(layers) if isinstance(m, nn.Upsample))
    return [i for i, m in enumerate(layers) if i < first_up and isinstance(m, AutoencoderTinyBlock)]


def build_autoencoder(latent_channels: int, pool: bool) -> AutoencoderTiny:
    """An ``AutoencoderTiny`` with the TAESD layout (random weights), with TAEF2's pool branch if asked."""
    ae = AutoencoderTiny(latent_channels=latent_channels)
    if pool:
        for coder, is_encoder in ((ae.encoder, True), (ae.decoder, False)):
            for i in _lowres_block_indices(coder.layers, is_encoder):
                coder.layers[i] = PooledTinyBlock(coder.layers[i].conv[0].out_channels)
    return ae


def tensor_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, dtypes, shapes and bytes: pins weights whatever file holds them."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        # reshape: a channels-last 1×1 kernel counts as contiguous but its last stride is not 1
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_shipped(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """A Tiny-VAE part shipped in the package (safetensors, nothing unpickled), checked against its pin."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated files
        raise TinyVAEError(f"{path} is not a readable safetensors file: {err}") from err
    if tensor_sha256(state) != sha256:
        raise TinyVAEError(f"{path}: its tensors do not match the pinned sha256 (modified or corrupt install)")
    return state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or non-torch files
        raise TinyVAEError(f"{path} is not a readable TAESD weight file: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TinyVAEError(f"{path} does not hold a state dict of tensors")
    return state


class TinyVAE(nn.Module):
    """A frozen TAESD-family autoencoder with an interface in [0, 1].

    Frozen means: no parameter requires gradients and the module stays in eval mode even when a
    parent calls ``.train()``; gradients still flow *through* it to its inputs (the Dice loss needs that).
    """

    def __init__(self, autoencoder: AutoencoderTiny, name: str = "custom") -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.name = name
        self.pool = any(isinstance(m, PooledTinyBlock) for m in autoencoder.modules())
        self.channels_last = False
        self.requires_grad_(False)
        self.eval()

    def use_channels_last(self, enabled: bool = True) -> TinyVAE:
        """Run the frozen networks in channels-last memory (inputs are converted on the way in).

        Its 64-channel convolutions run about a quarter faster that way on a CPU
        (``training/benchmarks/bench_model.py``), while E_wave's 12–32-channel UNets run slower, so this is a switch of
        the Tiny-VAE alone rather than of the whole model.
        """
        self.channels_last = enabled
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    def train(self, mode: bool = True) -> TinyVAE:
        return super().train(False)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] (B×3×H×W, H and W multiples of 8) → latent B×C×H/8×W/8."""
        return self.autoencoder.encoder.layers(self._in(image))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent → image in roughly [0, 1] (B×3×8h×8w), TAESD's own clamp applied first."""
        return self.autoencoder.decoder.layers(self._in(torch.tanh(latent / 3) * 3))

    def decode_mask(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent → soft mask in [0, 1] (B×1×8h×8w): mean over the decoded RGB channels, clamped.

        The mean of the last 64→3 convolution's outputs is the 64→1 convolution with its mean kernel
        and bias, so the decoder's last layer runs folded: the same mask, a tenth less decoder time
        (the decoder dominates Wave-GMS's cost), in training and inference alike.
        """
        layers = self.autoencoder.decoder.layers
        last = layers[-1]
        features = layers[:-1](self._in(torch.tanh(latent / 3) * 3))
        bias = None if last.bias is None else last.bias.mean(0, keepdim=True)
        mask = F.conv2d(features, last.weight.mean(0, keepdim=True), bias, last.stride, last.padding)
        return mask.clamp(0.0, 1.0)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_taesd_files(cls, encoder_path: str | os.PathLike | None, decoder_path: str | os.PathLike,
                         name: str = "custom") -> TinyVAE:
        """Load an original ``*_encoder.pth`` / ``*_decoder.pth`` pair (encoder optional: inference
        needs only the decoder). The layout, latent width and pool branch are read from the files."""
        dec = _read_state_dict(Path(decoder_path))
        enc = _read_state_dict(Path(encoder_path)) if encoder_path is not None else None
        return cls.from_taesd_state(enc, dec, name, f"{decoder_path} / {encoder_path}")

    @classmethod
    def from_taesd_state(cls, enc: dict[str, torch.Tensor] | None, dec: dict[str, torch.Tensor],
                         name: str = "custom", source: str = "weights") -> TinyVAE:
        """The same from state dicts with the original TAESD keys (``source`` names them in errors)."""
        try:
            latent_channels = dec["1.weight"].shape[1]
        except KeyError:
            raise TinyVAEError(f"{source} is not a TAESD-family decoder (no '1.weight')") from None
        pool = any(".pool." in k for k in dec)
        ae = build_autoencoder(latent_channels, pool)
        # diffusers' DecoderTiny applies the clamp in forward, so its layers start one index earlier.
        mapped = {f"decoder.layers.{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in dec.items()}
        if enc is not None:
            mapped.update({f"encoder.layers.{k}": v for k, v in enc.items()})
        expected = ae.state_dict()
        if enc is None:
            expected = {k: v for k, v in expected.items() if k.startswith("decoder.")}
        problems = sorted(set(expected) ^ set(mapped))
        if problems:
            raise TinyVAEError(
                f"{source}: keys do not match a TAESD-family autoencoder with "
                f"{latent_channels} latent channels (pool={pool}); first differences: {problems[:5]}"
            )
        for key, value in mapped.items():
            if value.shape != expected[key].shape:
                raise TinyVAEError(
                    f"{key}: shape {tuple(value.shape)} in the file, {tuple(expected[key].shape)} expected"
                )
        ae.load_state_dict(mapped, strict=enc is not None)
        return cls(ae, name)

    @classmethod
    def from_diffusers(cls, name_or_path: str | os.PathLike, **kwargs) -> TinyVAE:
        """Load a diffusers-format ``AutoencoderTiny`` (a local folder, or a hub name such as
        ``madebyollin/taesd``, which needs internet the first time).

        Only safetensors weights are read (a hub name may come from a checkpoint's header, i.e. from
        anyone: nothing is unpickled). With ``WAVEGMS_OFFLINE`` set a hub name is looked up in the
        Hugging Face cache on disk alone (the hub library contacts the hub even with
        ``local_files_only``); a hub name that cannot be had raises
        :class:`~napari_wavegms.zoo.downloads.WeightsUnavailableError` at once, not the hub's retries.
        """
        source = str(name_or_path)
        hub = not Path(source).expanduser().is_dir()
        kwargs.setdefault("use_safetensors", True)
        if hub and weights.offline():
            snapshot = _cached_hub_folder(source)
            if snapshot is None:
                raise _hub_unavailable(source)
            source = str(snapshot)
        try:
            autoencoder = AutoencoderTiny.from_pretrained(source, **kwargs)
        except OSError as err:
            if not hub:
                raise TinyVAEError(f"{source}: not a diffusers AutoencoderTiny folder: {err}") from err
            raise _hub_unavailable(str(name_or_path), err) from err
        return cls(autoencoder, str(name_or_path))

    @classmethod
    def random(cls, latent_channels: int, pool: bool | None = None) -> TinyVAE:
        """Randomly initialised, for cost measurements only (``pool`` defaults to TAEF2's layout for C=32)."""
        return cls(build_autoencoder(latent_channels, latent_channels == 32 if pool is None else pool), "random")


def _cached_hub_folder(name: str) -> Path | None:
    """The Hugging Face cache's copy of hub repository ``name`` (its snapshot folder), found on disk alone."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repository name
        return None
    return Path(found).parent if isinstance(found, str) else None


def _hub_unavailable(name: str, err: Exception | None = None) -> weights.WeightsUnavailableError:
    """The error for a hub Tiny-VAE that is not at hand: the fix first, the hub's own words last."""
    why = f"{weights.OFFLINE_ENV} is set" if weights.offline() else "it could not be downloaded"
    detail = f"Hub error: {type(err).__name__}: {str(err).strip().splitlines()[0]}" if err and str(err).strip() else ""
    return weights.WeightsUnavailableError(
        f"Tiny-VAE {name} is a Hugging Face hub name: save it to a folder and name that folder ({why}).",
        f"{name} is not in the Hugging Face cache and the hub was not contacted or not reached. Online, run\n"
        f"  AutoencoderTiny.from_pretrained({name!r}).save_pretrained(FOLDER)\n"
        f"and give FOLDER as the Tiny-VAE (or fill the Hugging Face cache, $HF_HOME, once online).\n{detail}".rstrip(),
    )


def _registry_part(spec: weights.TinyVAESpec, part: str, weights_dir: str | os.PathLike | None,
                   shipped: bool) -> dict[str, torch.Tensor]:
    """The original-keyed state dict of a registry Tiny-VAE's ``part``: the pinned copy shipped in the
    package if asked and intact (no network, no offline folder), else the sha256-checked registry file."""
    packaged = weights.shipped_file(spec.name, part) if shipped else None
    if packaged is not None:
        try:
            return _read_shipped(*packaged)
        except TinyVAEError as err:
            log.warning("%s; using the registry's copy instead", err)
    return _read_state_dict(weights.fetch(getattr(spec, part), weights_dir))


def load_tiny_vae(name_or_path: str | os.PathLike, weights_dir: str | os.PathLike | None = None,
                  need_encoder: bool = True, shipped: bool = True) -> TinyVAE:
    """Resolve a Tiny-VAE by registry name (``taef2``, ``taesd``), local folder, or diffusers hub name.

    A folder may hold a diffusers ``config.json`` or a ``*_encoder.pth`` / ``*_decoder.pth`` pair.
    A registry name takes the copies shipped inside the package first
    (:func:`napari_wavegms.zoo.downloads.shipped_file`), checked against their pinned tensor sha256, so a
    fresh install segments and trains with no network or offline folder; ``shipped=False`` goes to the
    registry's files (offline folder, cache, download) instead.
    """
    key = str(name_or_path)
    if key in weights.TINY_VAES:
        spec = weights.TINY_VAES[key]
        enc = _registry_part(spec, "encoder", weights_dir, shipped) if need_encoder else None
        dec = _registry_part(spec, "decoder", weights_dir, shipped)
        return TinyVAE.from_taesd_state(enc, dec, key, f"Tiny-VAE {key}")
    path = Path(key).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return TinyVAE.from_diffusers(path)
        decoders = sorted(path.glob("*_decoder.pth"))
        if len(decoders) == 1:
            encoder = decoders[0].with_name(decoders[0].name.replace("_decoder", "_encoder"))
            if need_encoder and not encoder.is_file():
                raise TinyVAEError(f"{path} holds {decoders[0].name} but not {encoder.name}")
            return TinyVAE.from_taesd_files(encoder if encoder.is_file() else None, decoders[0], name=path.name)
        raise TinyVAEError(f"{path} holds neither a diffusers config.json nor exactly one *_decoder.pth")
    if "/" in key and not path.exists():
        return TinyVAE.from_diffusers(key)
    raise TinyVAEError(f"unknown Tiny-VAE {key!r}: use one of {', '.join(weights.TINY_VAES)}, a folder, or a hub name")
