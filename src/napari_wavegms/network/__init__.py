"""Pure-torch Wave-GMS: wavelet encoder, latent mapping model, frozen Tiny-VAE, loss, checkpoints."""

from napari_wavegms.network.encoder import WaveletEncoder
from napari_wavegms.network.lmm import LatentMappingModel
from napari_wavegms.network.tiny_vae import TinyVAE, load_tiny_vae
from napari_wavegms.network.wavegms import WaveGMS, wavegms_loss

__all__ = ["LatentMappingModel", "TinyVAE", "WaveGMS", "WaveletEncoder", "load_tiny_vae", "wavegms_loss"]
