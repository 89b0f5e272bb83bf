"""Segmenting images and folders: the segmenter, clean-up, presence gate, image kinds, batch."""
