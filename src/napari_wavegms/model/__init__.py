"""Pure-torch Wave-GMS: wavelet encoder, latent mapping model, frozen Tiny-VAE, loss, checkpoints."""

from .encoder import WaveletEncoder
from .lmm import LatentMappingModel
from .tiny_vae import TinyVAE, load_tiny_vae
from .wavegms import WaveGMS, wavegms_loss

__all__ = ["LatentMappingModel", "TinyVAE", "WaveGMS", "WaveletEncoder", "load_tiny_vae", "wavegms_loss"]
