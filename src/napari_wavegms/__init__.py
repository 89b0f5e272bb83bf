"""napari-wavegms: Wave-GMS segmentation of 2D medical images in napari, the command line and Python.

Importing this package is cheap (no torch): napari imports it at start-up to read the manifest.
"""

__version__ = "0.1.0"
