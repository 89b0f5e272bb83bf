"""Wave-GMS: E_wave and the LMM (trainable) in front of a frozen Tiny-VAE decoder (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from napari_wavegms.core.images import resize_image
from napari_wavegms.network.encoder import WaveletEncoder
from napari_wavegms.network.lmm import LatentMappingModel
from napari_wavegms.network.tiny_vae import TinyVAE

DICE_SMOOTH = 1e-5


@dataclass
class WaveGMSOutput:
    """Everything one training forward pass produces."""

    mean: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    latents: dict[str, torch.Tensor]


class WaveGMS(nn.Module):
    """Image in [0, 1] → mask latents → (frozen decoder) → soft mask.

    ``image_size`` is the side the model was trained at; :meth:`predict` resizes to it and back.
    """

    def __init__(self, vae: TinyVAE, image_size: int = 224) -> None:
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
        self.image_size = image_size
        self.encoder = WaveletEncoder(vae.latent_channels)
        self.lmm = LatentMappingModel(vae.latent_channels)
        self.vae = vae

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, image: torch.Tensor, sample: bool | None = None) -> WaveGMSOutput:
        """All heads; samples ``z = μ + σ·ε`` in training mode unless ``sample`` says otherwise."""
        mean, logvar = self.encoder(image)
        if self.training if sample is None else sample:
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        else:
            z = mean
        return WaveGMSOutput(mean, logvar, z, self.lmm(z))

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Deterministic soft mask in [0, 1], B×1×H×W at the input's size (mean latent, ``out`` head)."""
        return self.predict_with_latents(image)[0]

    @torch.inference_mode()
    def predict_with_latents(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict`'s soft mask with the two latents it came from: E_wave's μ and the LMM's
        ``out`` latent (B×C×S/8×S/8), which an image-level check (:mod:`napari_wavegms.inference.presence`) reads."""
        size = image.shape[-2:]
        x = image
        if tuple(size) != (self.image_size, self.image_size):
            x = resize_image(image, self.image_size)
        mean, _ = self.encoder(x)
        latent = self.lmm(mean, heads=("out",))["out"]
        mask = self.vae.decode_mask(latent)
        if mask.shape[-2:] != size:
            mask = F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)
        return mask, mean, latent


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """1 − soft Dice per image, averaged over the batch."""
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def alignment_loss(z: torch.Tensor, z_teach: torch.Tensor) -> torch.Tensor:
    """0.9 · mean(1 − cos over channels) + 0.1 · SmoothL1: pulls E_wave's latent towards the Tiny-VAE's."""
    cos = F.cosine_similarity(z, z_teach, dim=1)
    return 0.9 * (1 - cos).mean() + 0.1 * F.smooth_l1_loss(z, z_teach)


HEADS = LatentMappingModel.HEADS
#: Images per call of the frozen networks in the low-memory (checkpointed) loss.
LOW_MEMORY_CHUNK = 4


def wavegms_loss(
    model: WaveGMS, image: torch.Tensor, mask: torch.Tensor, dice_heads: tuple[str, ...] = HEADS,
    checkpoint_decoder: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of docs/design.md §5 for one batch (image B×3×S×S in [0, 1], mask B×1×S×S in {0, 1}).

    Returns the scalar to backpropagate and its parts as floats for logging. Every head gets the latent
    MSE; the heads in ``dice_heads`` (all three in the paper) are also decoded, in one batched call of the
    frozen decoder, for the soft Dice, with gradients flowing through it into the LMM. Decoding is most
    of a step's cost, so the ``fast`` recipe decodes the ``out`` head only: the one inference uses.
    ``checkpoint_decoder`` runs the frozen networks on a few images at a time and keeps none of the
    decoder's full-resolution activations for the backward pass: each chunk is recomputed there, so at
    most one chunk's activations exist at once. Most of a step's memory, for one more decoder forward.
    """
    unknown = set(dice_heads) - set(HEADS)
    if unknown:
        raise ValueError(f"unknown Dice head(s) {sorted(unknown)}; the heads are {', '.join(HEADS)}")
    out = model(image)
    chunk = LOW_MEMORY_CHUNK if checkpoint_decoder else None
    with torch.no_grad():
        both = torch.cat([mask.expand(-1, 3, -1, -1), image], dim=0)
        targets = torch.cat([model.vae.encode(part) for part in both.split(chunk or len(both))])
        z_mask, z_teach = targets.float().chunk(2, dim=0)
    parts: dict[str, torch.Tensor] = {}
    total = image.new_zeros((), dtype=torch.float32)
    for name in HEADS:
        parts[f"mse_{name}"] = F.mse_loss(out.latents[name].float(), z_mask)
        total = total + parts[f"mse_{name}"]
    decoded_heads = [k for k in HEADS if k in dice_heads]
    if decoded_heads:
        latents = torch.cat([out.latents[k] for k in decoded_heads], dim=0)
        if checkpoint_decoder and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            decoded = torch.cat([checkpoint(model.vae.decode_mask, part, use_reentrant=False)
                                 for part in latents.split(chunk)]).float()
        else:
            decoded = model.vae.decode_mask(latents).float()
        for name, prob in zip(decoded_heads, decoded.chunk(len(decoded_heads), dim=0), strict=True):
            parts[f"dice_{name}"] = soft_dice_loss(prob, mask.float())
            total = total + parts[f"dice_{name}"]
    parts["align"] = alignment_loss(out.z.float(), z_teach)
    total = total + parts["align"]
    return total, {k: float(v.detach()) for k, v in {**parts, "total": total}.items()}
