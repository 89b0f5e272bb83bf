"""Images, files, progress and devices: what every part of the engine shares."""
