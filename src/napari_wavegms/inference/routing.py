"""Which model segments an image: the one place that decides it, for the engine, the CLI and the widgets.

The rules, in order:

1. A model the user chose always wins: a checkpoint file, or a built-in model picked by hand
   (:func:`users_model`). Nothing below replaces it.
2. Otherwise an image gets the built-in model made for its kind (ultrasound, endoscopy, dermoscopy),
   judged from its statistics (:func:`napari_wavegms.inference.modality.classify`); a kind without a
   built-in model gets the nearest one, and the choice says so (:class:`ModelChoice`).
3. In a folder run, the kinds of a sample of the folder's images are judged first
   (:meth:`FolderRouter.judge_folder`): an image the classifier finds ambiguous is then judged as an
   image of its folder (:func:`napari_wavegms.inference.modality.folder_prior`), while a clear image of
   another kind still gets its own kind's model.
4. An image that cannot be judged keeps the current model in the widgets (:func:`choice_for_image`
   gives ``None``) and gets the default model in a folder run (:meth:`FolderRouter.choose`), so a run
   never stops at it.
5. An image of no kind the built-in models know (:mod:`napari_wavegms.inference.unknown_kind`) gets the
   kind :data:`UNKNOWN`; the Segment widget does not run Auto on it, a folder run segments it with the
   model of its routed kind (or leaves it out: ``skip_unknown``) and flags it.
6. No choice hides its doubt: :func:`doubts` names every reason to check it (an uncertain kind, a kind
   the folder overturned or that goes against the folder), and a folder run flags those rows for review.

Why here: these rules were spread over the registry, the batch engine and two widgets, and drifted
apart; the widgets now keep only what is Qt (showing the choice), the engine only what is loading.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_wavegms.core.progress import Progress
from napari_wavegms.zoo import registry

if TYPE_CHECKING:
    from napari_wavegms.inference.batch import BatchPaths
    from napari_wavegms.inference.modality import Modality

#: Images read, evenly spread over a folder, to estimate which kinds of image it holds.
FOLDER_SAMPLE = 100

#: Files looked at, from the top of a folder, for the choice a widget shows when a folder is picked.
FOLDER_PREVIEW = 5

#: The kind of an image that is none of those the built-in models know (a photo, a fundus, histology).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ModelChoice:
    """The built-in model picked for an image, and why, in words a user can check."""

    model: str | None
    kind: str  # what the image looks like: ultrasound, endoscopy, dermoscopy or UNKNOWN
    reason: str  # the evidence: "grey, speckle texture"
    exact: bool  # a built-in model is made for this kind (False: the nearest one was taken)
    doubt: str = ""  # why a person should check this choice ("" when there is no doubt): see :func:`doubts`

    @property
    def unknown(self) -> bool:
        """The image is of no kind the built-in models know (:data:`UNKNOWN`)."""
        return self.kind == UNKNOWN

    @property
    def message(self) -> str:
        """One line for a status bar, a tooltip or a layer's metadata."""
        if self.unknown:
            nearest = f"; {self.model} is the nearest built-in model" if self.model else ""
            return f"not a kind of image the built-in models know ({self.reason}){nearest}"
        if self.model is None:
            return f"{self.kind} image ({self.reason}); no built-in model is installed"
        if self.exact:
            return f"{self.model} for {self.kind} ({self.reason})"
        models = registry.installed_models()
        made_for = models[self.model].card.kind if self.model in models else None
        return (f"{self.model} (made for {made_for or 'other images'}): no built-in model for {self.kind} "
                f"({self.reason}); choose a {self.kind} model for better masks")

    @property
    def note(self) -> str:
        """The kind and the evidence, as a folder run's CSV keeps them (``model_choice``), with the doubt."""
        missing = "" if self.exact or self.unknown else "; no built-in model for it"
        return f"{self.kind}: {self.reason}{missing}" + (f"; review: {self.doubt}" if self.doubt else "")


def users_model(chosen: str | os.PathLike | None, by_hand: bool) -> bool:
    """Whether ``chosen`` is the user's own model, kept for every image: one picked by hand, or any
    model that is not installed (a checkpoint file or training folder). An installed model of the user's,
    chosen automatically for its kind (:func:`napari_wavegms.zoo.user_models.set_preferred`), is routed
    like a built-in one."""
    return bool(chosen) and (by_hand or str(chosen) not in registry.installed_models())


def _for_kind(kind: str) -> tuple[str | None, bool]:
    """The built-in model for a kind of image and whether it is made for that kind (``False``: the
    nearest, :func:`napari_wavegms.zoo.registry.suggest_model`)."""
    model = registry.suggest_model(kind)
    models = registry.installed_models()
    return model, model in models and models[model].card.kind == kind


def doubts(found: Modality, prior: np.ndarray | None) -> list[str]:
    """Why a person should check the kind an image was given (empty: no doubt). The folder's prior is
    used one way for every image, sure or unsure: Bayes' rule (:func:`napari_wavegms.inference.modality.with_prior`),
    so the image's own evidence is weighed against its folder's and only strong evidence goes against the
    folder. No threshold decides which images the prior may touch, because such a cut hid its effect (an
    image called "uncertain" kept a wrong kind while sure ones were switched). Instead every place where
    the answer may be wrong is said:

    - the answer is uncertain (its probability below :data:`~napari_wavegms.inference.modality.UNSURE_BELOW`,
      the classifier's own "uncertain" mark);
    - the folder's prior overturned the image's own reading (a different kind taken alone);
    - the answer goes against the folder (a kind with under half of the folder's share): in a folder of
      one kind, every image given another kind is then flagged, whatever the classifier's confidence.
    """
    from napari_wavegms.inference.modality import KINDS, UNSURE_BELOW

    said = []
    if found.confidence < UNSURE_BELOW:
        said.append(f"image kind uncertain ({found.kind} {found.confidence:.2f})")
    if found.alone and max(found.alone, key=found.alone.get) != found.kind:
        first = max(found.alone, key=found.alone.get)
        said.append(f"its folder's kinds overturned its own reading ({first} {found.alone[first]:.2f} alone)")
    elif prior is not None and prior[KINDS.index(found.kind)] < 0.5:
        main = KINDS[int(np.argmax(prior))]
        said.append(f"unlike most of its folder ({main} {float(np.max(prior)):.0%})")
    return said


def choose_model(image: Any, rgb: bool | None = None, prior: np.ndarray | None = None,
                 open_set: bool = True) -> ModelChoice:
    """The built-in model for a napari-style image (numpy or dask, any dtype; stacks by their first
    plane), from :func:`napari_wavegms.inference.modality.classify`. Cheap: at most ~64k pixels are read.
    ``prior``: the kinds' shares in the image's folder (:func:`napari_wavegms.inference.modality.folder_prior`).

    With ``open_set`` an image of no kind the built-in models know (:mod:`napari_wavegms.inference.unknown_kind`:
    a photo, a fundus, histology) gets the kind :data:`UNKNOWN`, the model of the kind it was routed to
    (used only if the caller segments it anyway) and a doubt. The check asks whether the models' encoder
    agrees with that kind, so in a folder the kind it checks is the one the folder's prior helped choose:
    a skin image the classifier alone takes for endoscopy, which the encoder finds nearer to skin, is
    unknown alone (the two readings disagree) and dermoscopy in a folder of dermoscopy. The choice's
    ``doubt`` says every reason to check it (:func:`doubts`).
    Raises what the classifier raises for an image it cannot read."""
    from napari_wavegms.inference.modality import classify_features, features_of_sample, sample_rgb

    sample = sample_rgb(image, rgb)
    feats = features_of_sample(sample)
    found = classify_features(feats, prior)
    model, exact = _for_kind(found.kind)
    said = doubts(found, prior)
    if open_set and sample.max() > sample.min():  # a blank image has no kind to judge (its mask says blank)
        from napari_wavegms.inference.unknown_kind import check_sample

        check = check_sample(sample, feats, found.kind)
        if not check.known:
            return ModelChoice(model, UNKNOWN, str(check), False,
                               "; ".join(["not a kind of image the built-in models know", *said]))
    return ModelChoice(model, found.kind, found.reason, exact, "; ".join(said))


def choice_for_image(image: Any, rgb: bool | None = None) -> ModelChoice | None:
    """:func:`choose_model`, or ``None`` for an image the statistics cannot judge (the caller keeps its
    model: following an image must never break)."""
    try:
        return choose_model(image, rgb)
    except Exception:
        return None


def pick(chosen: str | None, by_hand: bool,
         judge: Callable[[], ModelChoice | None]) -> tuple[str | None, ModelChoice | None]:
    """The model to use, and the automatic choice behind it (``None`` when the user's model is kept).

    The user's model (:func:`users_model`) wins without judging anything; otherwise ``judge()`` (the
    image's :func:`choice_for_image`) decides, and ``chosen`` stays when it cannot."""
    if users_model(chosen, by_hand):
        return chosen, None
    choice = judge()
    if choice is None or choice.model is None:
        return chosen, choice
    return choice.model, choice


def choice_for_folder(paths: BatchPaths, pattern: str = "*", recursive: bool = False,
                      look_at: int = FOLDER_PREVIEW) -> ModelChoice | None:
    """The built-in model for the kind of the first readable image among the first ``look_at`` files a
    run would take, with the reason (:func:`choose_model`); ``None`` when none can be read.

    A run without a chosen model still decides per file (:class:`FolderRouter`); this is what a
    widget shows when a folder is picked."""
    from napari_wavegms.core.io import ImageReadError, is_image_file, read_image
    from napari_wavegms.inference.batch import iter_inputs

    for n, path in enumerate(iter_inputs(paths, pattern, recursive)):
        if n >= look_at:
            break
        if is_image_file(path):
            try:
                image = read_image(path)
            except ImageReadError:
                continue
            return choose_model(image)
    return None


class FolderRouter:
    """Per-file choice of the built-in model for a run where the user chose none: each image gets the
    model made for its kind, so a folder that mixes kinds gives each of its clear images what it would
    get alone. With :attr:`prior` (the kinds' shares in the folder, :meth:`judge_folder`) an image the
    classifier finds ambiguous is judged as an image of its folder."""

    def __init__(self, prior: np.ndarray | None = None) -> None:
        self.prior = prior

    def choose(self, image: np.ndarray) -> ModelChoice:
        """The choice for one image; the default model, with the reason, for one that cannot be judged."""
        try:
            return choose_model(image, prior=self.prior)
        except Exception as err:  # an image the statistics cannot judge still gets segmented, flagged
            return ModelChoice(registry.default_model(), UNKNOWN, f"could not judge the image: {err}", False,
                               "could not judge the kind of image")

    def judge_folder(self, files: Iterable[Path], count: int) -> Generator[Progress, None, None]:
        """Set :attr:`prior` from up to :data:`FOLDER_SAMPLE` of ``files`` (``count`` of them, taken evenly
        spread); yields progress. Unreadable files are left to the run, which reports them, and images of
        no kind the models know are left out (their probabilities say nothing of the folder's known kinds)."""
        from napari_wavegms.core.io import read_image
        from napari_wavegms.inference.modality import KINDS, classify_features, features_of_sample, folder_prior
        from napari_wavegms.inference.modality import sample_rgb as sample_of
        from napari_wavegms.inference.unknown_kind import check_sample

        step = max(1, -(-count // FOLDER_SAMPLE))
        probs = []
        for n, path in enumerate(files):
            if n % step:
                continue
            try:
                sample = sample_of(read_image(path))
                feats = features_of_sample(sample)
                found = classify_features(feats)
                known = check_sample(sample, feats, found.kind).known
            except Exception:  # the run itself reports what is wrong with this file
                continue
            if not known:
                continue
            probs.append([found.scores[k] for k in KINDS])
            if len(probs) % 10 == 0:
                yield Progress(0, count, f"judging the kinds of the folder's images: {len(probs)}")
        self.prior = folder_prior(np.array(probs)) if len(probs) > 1 else None
