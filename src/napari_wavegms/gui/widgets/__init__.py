"""napari widgets: thin glue over the engine. Importing them never imports torch (that waits for a job)."""
