"""The napari side: widgets, menu commands, the writer and sample data (Qt and napari live here only)."""
