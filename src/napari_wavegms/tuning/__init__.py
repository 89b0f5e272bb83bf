"""From a trained checkpoint to a built-in model: the release steps that write the package's data.

Each module is one step, run from a source checkout as ``python -m napari_wavegms.tuning.<module>``
(its ``--help`` says how), in this order for a new model:

- :mod:`~napari_wavegms.tuning.builtin`: the half-precision checkpoint and its model card, scored on test;
- :mod:`~napari_wavegms.tuning.tta_choice`: whether the card turns test-time flips on (validation: a gain
  worth their 3-4x time);
- :mod:`~napari_wavegms.tuning.postprocess_choice`: the card's default clean-up (validation);
- :mod:`~napari_wavegms.tuning.presence_fit`: the card's presence gate and its two thresholds, for
  models trained with lesion-free images (held-out training folds and validation);

and, for the package as a whole, :mod:`~napari_wavegms.tuning.modality_fit` (the image-kind classifier,
``inference/modality.json``) and :mod:`~napari_wavegms.tuning.shipped_tiny_vae` (the TAEF2 halves shipped
in ``zoo/builtin``). They live in the package, not beside it, so that they import the engine the way
users do and the test suite can import them; none of them imports Qt or napari.
"""
