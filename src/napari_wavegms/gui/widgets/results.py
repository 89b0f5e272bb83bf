"""What a result layer holds and how it is written: the confidence phrases, the metadata, and the rule
that a mask the user corrected by hand is never overwritten (a rerun goes to a new layer instead)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_wavegms.gui.widgets.corrections import remember_drawn

if TYPE_CHECKING:
    import napari

    from napari_wavegms.gui.widgets.segment import SegmentRequest


def confidence_info(result: Any) -> dict[str, Any]:
    """The confidence part of a result layer's metadata: the score (the weakest slice's), whether to
    review the mask, each slice's score for a stack, the presence gate's answer where one ran
    (``lesion``: yes / no / unsure, and per slice for a stack) and the engine's note (blank image)."""
    info: dict[str, Any] = {"confidence": round(result.score, 3), "review": bool(result.review)}
    if np.ndim(result.confidence):
        info["slice_confidence"] = np.round(result.confidence, 3).tolist()
    if getattr(result, "lesion_answer", ""):
        info["lesion"] = result.lesion_answer
        if np.ndim(result.lesion):
            info["slice_lesion"] = np.asarray(result.lesion).tolist()
    if result.note:
        info["note"] = result.note
    return info


def kept_note(info: dict[str, Any]) -> str:
    """What the status line and the menu command's message add when an edited mask was kept."""
    kept = info.get("kept") or []
    if not kept:
        return ""
    return f" · your edited {', '.join(kept)} kept as it is"


def describe_confidence(info: dict[str, Any]) -> str:
    """One short phrase for the status line and the menu command's message."""
    if "confidence" not in info:
        return ""
    text = f"confidence {info['confidence']:.2f}"
    if info.get("note"):
        return f"{text} ({info['note'].split(' (')[0]}: empty mask)"
    if info.get("lesion") == "no":  # the presence gate's answer, made to be trusted: nothing to review
        return "no lesion found (empty mask)"
    if info.get("lesion") == "unsure":
        return f"{text}, the scan may hold no lesion: review this mask"
    return f"{text}, review this mask" if info.get("review") else text


WRITTEN = "written"  # metadata["wavegms"] key: digest of the mask data the plugin last wrote into the layer


def data_digest(data: Any) -> str:
    """A short digest of a mask's values, shape and dtype: what tells a mask the plugin wrote from one a
    user has painted on since (painting changes the array in place, so only its values can tell)."""
    import hashlib

    array = np.ascontiguousarray(np.asarray(data))
    digest = hashlib.blake2b(f"{array.dtype.str}{array.shape}".encode(), digest_size=16)
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def edited_by_user(layer: Any) -> bool:
    """Whether ``layer``'s data differs from what the plugin last wrote into it. A layer without a
    digest (made by hand, or by an older version of the plugin) counts as edited: it is never overwritten."""
    written = (layer.metadata.get("wavegms") or {}).get(WRITTEN)
    return written is None or written != data_digest(layer.data)


def result_layers(viewer: napari.Viewer, name: str) -> list[Any]:
    """Layers holding results for ``name``: ``name`` itself, then napari's numbered copies
    (``name [1]``, ``name [2]``, …), newest first."""
    import re

    numbered = re.compile(re.escape(name) + r" \[(\d+)\]")
    copies = [(int(m.group(1)), layer) for layer in viewer.layers if (m := numbered.fullmatch(layer.name))]
    exact = [layer for layer in viewer.layers if layer.name == name]
    return exact + [layer for _, layer in sorted(copies, key=lambda pair: -pair[0])]


def result_target(viewer: napari.Viewer, name: str) -> tuple[Any, list[str]]:
    """The layer a new result may replace (``None``: add a new one) and the names of the result layers
    kept because the user edited them (or because they are not Labels layers).

    A hand-corrected mask is worth more than a rerun of the model, so only a Labels layer whose data is
    still exactly what the plugin wrote is updated in place; otherwise the result goes to a new layer
    that napari numbers (``{image}_wavegms [1]``) and later reruns update that one.
    """
    from napari.layers import Labels

    kept: list[str] = []
    for layer in result_layers(viewer, name):
        if isinstance(layer, Labels) and not edited_by_user(layer):
            return layer, kept
        kept.append(layer.name)
    return None, kept


def write_result(
    viewer: napari.Viewer, request: SegmentRequest, mask: np.ndarray, info: dict[str, Any]
) -> tuple[Any, list[str]]:
    """Put the mask into ``{image}_wavegms``: update it if the plugin wrote it and the user has not edited
    it since, else add a new layer (with the image's transforms); an edited layer is never touched.
    Returns the layer written and the names of the edited result layers kept (see :func:`result_target`)."""
    mask = mask.astype(np.uint8, copy=False)
    layer, kept = result_target(viewer, request.output_name)
    if request.index is not None:
        if layer is not None and tuple(layer.data.shape) == request.full_shape:
            full = np.asarray(layer.data)
        else:
            full = np.zeros(request.full_shape, dtype=np.uint8)
        full[request.index] = mask
        mask = full
    metadata = {"wavegms": dict(info)}
    if layer is None:
        layer = viewer.add_labels(mask, name=request.output_name, metadata=metadata, **request.transforms)
    else:
        layer.data = mask
        for key, value in request.transforms.items():
            setattr(layer, key, value)
        layer.metadata.update(metadata)
    layer.metadata["wavegms"][WRITTEN] = data_digest(layer.data)
    remember_drawn(layer, layer.data)  # to say later how much a kept correction changed it
    return layer, kept


def result_metadata(value: tuple[Any, str, str, bool, bool], request: SegmentRequest, model: str | None,
                    threshold: float, model_choice: str = "") -> dict[str, Any]:
    """What a result layer's ``metadata["wavegms"]`` says of the mask: the model (and why it was chosen),
    device, threshold, flips, clean-up and presence check as applied, the image, and the confidence."""
    result, device_name, applied, gated, flipped = value
    return {
        "model": str(model),
        "device": device_name,
        "threshold": threshold,
        "tta": flipped,
        "postprocess": applied,
        "presence_check": gated,
        "image": request.image_name,
        **({"model_choice": model_choice} if model_choice else {}),
        **confidence_info(result),
    }
