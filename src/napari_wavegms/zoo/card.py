"""A built-in model's card, typed: what the code reads of ``builtin/<name>.json``, read once per file.

Why typed: the engine, the batch, the widgets and the CLI each need a few of a card's entries (the kind
of image it is made for, its old names, whether its test-time flips are on, its clean-up, its presence
gate). Read as string keys in each of them, a renamed or mistyped key failed silently as "no entry".
:class:`ModelCard` names each entry once, with its default for a card without it; :func:`read_card`
parses a card file once and keeps it until the file changes (its path and modification time), so
listing the models, as the widgets do on every image, reads no JSON again.

The parts that describe a model to people (its data and licence, the training recipe, the test
scores) are not read by the code; they stay in :attr:`ModelCard.record`, the card as written. Cards are
written by :func:`napari_wavegms.zoo.registry.set_card_entry` (the ``napari_wavegms.tuning`` scripts).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_wavegms.inference.postprocess import PostProcess
    from napari_wavegms.inference.presence import PresenceGate

#: The rank of a card without one: after every ranked model.
UNRANKED = 99


@dataclass(frozen=True)
class ModelCard:
    """The entries of a model card that the code acts on, each with the default of a card without it."""

    name: str
    #: the kind of image the model is made for: ``"ultrasound"``, ``"endoscopy"`` or ``"dermoscopy"``
    kind: str | None = None
    #: names of the models it replaced, which keep working (scripts and saved settings)
    aliases: tuple[str, ...] = ()
    #: the order of the built-in models (the first is the default)
    rank: int = UNRANKED
    #: one line for pickers; the name when the card has none
    summary: str = ""
    #: what its training images look like: ``"gray"`` or ``"rgb"``
    images: str | None = None
    #: test-time flips on (chosen on validation by ``napari_wavegms.tuning.tta_choice``)
    tta: bool = False
    #: the card as written, for what people read (data, licence, recipe, scores); read-only
    record: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    @classmethod
    def from_record(cls, name: str, record: Mapping[str, Any]) -> ModelCard:
        """The card named ``name`` (its file's stem) from its JSON record."""
        kind = record.get("kind")
        images = record.get("images")
        return cls(
            name=name,
            kind=str(kind) if kind else None,
            aliases=tuple(str(a) for a in record.get("aliases") or ()),
            rank=int(record.get("rank", UNRANKED)),
            summary=str(record.get("summary", name)),
            images=str(images) if images else None,
            tta=bool((record.get("tta") or {}).get("flips", False)),
            record=MappingProxyType(dict(record)),
        )

    # The clean-up and the gate are parsed on first use: a malformed one fails the run that needs it,
    # not the listing of every model.
    @cached_property
    def postprocess(self) -> PostProcess:
        """The clean-up chosen on validation (``napari_wavegms.tuning.postprocess_choice``); none without one."""
        from napari_wavegms.inference.postprocess import PostProcess

        return PostProcess.from_dict(self.record.get("postprocess"))

    @cached_property
    def presence(self) -> PresenceGate | None:
        """The presence gate (``napari_wavegms.tuning.presence_fit``); ``None`` for a model without one.
        Raises ``ValueError`` for a malformed record."""
        from napari_wavegms.inference.presence import PresenceGate

        values = self.record.get("presence")
        return PresenceGate.from_dict(values) if values else None


#: The card of a checkpoint that has none: no flips, no clean-up, no presence gate.
NO_CARD = ModelCard(name="")

_CACHE: dict[Path, tuple[tuple[int, int, int], ModelCard]] = {}
_LOCK = threading.Lock()


def read_card(path: str | Path) -> ModelCard:
    """The card in the JSON file ``path``, named by its ``"name"`` (else the file's stem: a user model's
    name may hold characters a file name cannot); read again only once the file has changed (its
    modification time, size or inode: a card rewritten atomically is a new file)."""
    path = Path(path)
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    with _LOCK:
        cached = _CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    record = json.loads(path.read_text())
    card = ModelCard.from_record(str(record.get("name") or path.stem), record)
    with _LOCK:
        _CACHE[path] = (stamp, card)
    return card


def forget(path: str | Path) -> None:
    """Drop the cached card of ``path`` (after writing it), so the next read sees the new file."""
    with _LOCK:
        _CACHE.pop(Path(path), None)
