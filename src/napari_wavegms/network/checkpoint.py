"""The one checkpoint format of napari-wavegms: a single ``.safetensors`` file, safe to load.

It holds the trainable weights (E_wave and LMM) *and* the frozen Tiny-VAE decoder, so a checkpoint
segments images on its own, with no download. Its header carries a JSON config (Tiny-VAE name and
latent width, image size, training data and recipe, metrics) and a sha256 of the tensor bytes, so a
truncated, tampered or mismatched file is refused with a message naming the file and the problem.
safetensors stores raw tensors only: nothing is unpickled.

Resuming a run also needs the optimizer and random state: :func:`save_train_state` keeps them in a
second safetensors file (tensors, plus JSON for the scalars), for the same reason, together with the
trainable weights they belong to: two files cannot be replaced at the same instant, so a run killed
between writing them would otherwise resume one epoch's optimizer with another epoch's weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from napari_wavegms.core.atomic import atomic_path
from napari_wavegms.network.tiny_vae import TinyVAE, build_autoencoder, load_tiny_vae, tensor_sha256
from napari_wavegms.network.wavegms import WaveGMS
from napari_wavegms.zoo import downloads as weights

FORMAT = "napari-wavegms/1"
DECODER_PREFIX = "vae_decoder."


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """The checksum a checkpoint's header carries for its tensors (the same as the shipped decoder's pin)."""
    return tensor_sha256(tensors)


def model_tensors(model: WaveGMS, dtype: torch.dtype | None = None,
                  embed_decoder: bool = True) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores: ``encoder.*``, ``lmm.*`` and (unless asked not to) the frozen decoder."""
    tensors = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    tensors |= {f"lmm.{k}": v for k, v in model.lmm.state_dict().items()}
    if embed_decoder:
        tensors |= {DECODER_PREFIX + k: v for k, v in model.vae.autoencoder.decoder.state_dict().items()}
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def save_checkpoint(path: str | os.PathLike, model: WaveGMS, config: dict[str, Any] | None = None,
                    dtype: torch.dtype | None = None, embed_decoder: bool = True) -> Path:
    """Write ``model`` atomically (temporary file, then rename) with ``config`` in the header.

    ``dtype=torch.float16`` halves the size (fine for shipping: masks are thresholded).
    ``embed_decoder=False`` leaves out the frozen decoder (2.7 MB) when the model's Tiny-VAE is in the
    weights registry: loading then takes it from there, sha256-checked (how built-in models stay small).
    """
    path = Path(path)
    if not embed_decoder and model.vae.name not in weights.TINY_VAES:
        raise ValueError(f"Tiny-VAE {model.vae.name!r} is not in the registry: its decoder must be embedded")
    tensors = model_tensors(model, dtype, embed_decoder)
    header = {  # what describes the model comes from the model itself, whatever ``config`` carried over
        **(config or {}),
        "format": FORMAT,
        "tiny_vae": {"name": model.vae.name, "latent_channels": model.latent_channels, "pool": model.vae.pool,
                     "decoder": "embedded" if embed_decoder else "registry"},
        "image_size": model.image_size,
    }
    metadata = {"wavegms": json.dumps(header), "sha256": _digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and tensors of a checkpoint, verified; raises :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint (truncated or corrupt?): {err}"
        ) from err
    if "wavegms" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a Wave-GMS checkpoint (no 'wavegms' header)")
    try:
        config = json.loads(metadata["wavegms"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its Wave-GMS header is not valid JSON: {err}") from err
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {config.get('format')!r} is not supported (expected {FORMAT!r})")
    if metadata.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path}: its weights do not match the checksum in its header (modified or corrupt)")
    return config, tensors


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu",
                    weights_dir: str | os.PathLike | None = None,
                    need_encoder: bool = False) -> tuple[WaveGMS, dict[str, Any]]:
    """Rebuild a :class:`WaveGMS` from a checkpoint.

    Inference needs only the decoder, stored in the file (or, for files saved with
    ``embed_decoder=False``, taken from the weights registry). Training from it (``need_encoder=True``)
    also loads the Tiny-VAE's encoder by the name in the config, from the registry or ``weights_dir``.
    Built-in models and training take registry parts from the copies shipped in the package (offline on
    a fresh install); another checkpoint saved without its decoder takes it from the registry's files.
    """
    config, tensors = read_checkpoint(path)
    try:
        vae_cfg = config["tiny_vae"]
        latent_channels, pool = int(vae_cfg["latent_channels"]), bool(vae_cfg["pool"])
        image_size = int(config["image_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: incomplete config ({err!r} missing or invalid)") from err
    embedded = vae_cfg.get("decoder", "embedded") == "embedded"
    if need_encoder or not embedded:
        # built-in models and training take the copies shipped in the package: offline on a fresh install
        shipped = need_encoder or Path(path).resolve().parent == weights.SHIPPED_DIR.resolve()
        vae = load_tiny_vae(vae_cfg["name"], weights_dir, need_encoder=need_encoder, shipped=shipped)
    else:
        vae = TinyVAE(build_autoencoder(latent_channels, pool), vae_cfg["name"])
    if vae.latent_channels != latent_channels:
        raise CheckpointError(f"{path}: trained with {latent_channels} latent channels, "
                              f"but Tiny-VAE {vae_cfg['name']!r} has {vae.latent_channels}")
    model = WaveGMS(vae, image_size=image_size)
    parts = [(model.encoder, "encoder."), (model.lmm, "lmm.")]
    if embedded:
        parts.append((model.vae.autoencoder.decoder, DECODER_PREFIX))
    _load_parts(parts, tensors, f"{path}: weights do not fit the model its config describes")
    model.vae.requires_grad_(False)
    return model.to(device).eval(), config


def _load_parts(parts: list[tuple[torch.nn.Module, str]], tensors: dict[str, torch.Tensor], problem: str) -> None:
    """Load each module from the tensors under its prefix, exactly (no key missing, none left over)."""
    for module, prefix in parts:
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = module.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        bad_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
        if missing or unexpected or bad_shape:
            raise CheckpointError(
                f"{problem} (missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]})"
            )
        module.load_state_dict({k: v.float() for k, v in state.items()})


def checkpoint_header(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's JSON header alone, unverified (cheap: no tensor is read); ``{}`` if it has none."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("wavegms", "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {err}") from err


# ---------------------------------------------------------------- resumable training state
WEIGHTS_PREFIX = "model."
def save_train_state(
    path: Path, optimizer: torch.optim.Optimizer, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
    model: WaveGMS | None = None,
) -> Path:
    """Optimizer state and run state as safetensors (tensors) + JSON metadata: resumable, never pickled.

    With ``model``, its trainable weights (E_wave and LMM, not the frozen Tiny-VAE) are stored too, so
    the file alone is a consistent resume point (:func:`restore_train_weights`).
    """
    sd = optimizer.state_dict()
    out = {f"rng.{k}": v.contiguous() for k, v in tensors.items()}
    trainable = model_tensors(model, embed_decoder=False) if model is not None else {}
    out |= {WEIGHTS_PREFIX + k: v for k, v in trainable.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    metadata = {
        "meta": json.dumps(meta),
        "param_groups": json.dumps(sd["param_groups"]),
        "scalars": json.dumps(scalars),
    }
    if trainable:
        metadata["weights_sha256"] = _digest(trainable)
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=metadata)
    return path


def load_train_state(
    path: Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore ``optimizer`` from :func:`save_train_state`'s file; returns (meta, rng tensors)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no training state to resume from (was the run started by this version?)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        scalars, groups, meta = (json.loads(md[k]) for k in ("scalars", "param_groups", "meta"))
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable training state (truncated or corrupt?): {err!r}") from err
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in scalars.items():
        state.setdefault(int(idx), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: the training state does not fit this model's optimizer: {err}") from err
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta, rng


def restore_train_weights(path: Path, model: WaveGMS) -> bool:
    """Load the trainable weights kept in a training state file into ``model``, checked against the
    digest saved with them; ``False`` (nothing loaded) for a state file from before they were kept."""
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
            tensors = {k[len(WEIGHTS_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(WEIGHTS_PREFIX)}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable training state (truncated or corrupt?): {err!r}") from err
    if not tensors:
        return False
    if md.get("weights_sha256") != _digest(tensors):
        raise CheckpointError(f"{path}: its weights do not match the checksum saved with them (modified or corrupt)")
    _load_parts([(model.encoder, "encoder."), (model.lmm, "lmm.")], tensors,
                f"{path}: the weights in this training state do not fit the model")
    return True
