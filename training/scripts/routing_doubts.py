"""Whether routing hides its doubt: simulated one-kind folders of held-out images, wrong choices and flags.

    python training/scripts/routing_doubts.py [--cache runs/modcache] [--folders 200] [--sizes 20 150]

The images are the held-out splits of :mod:`napari_wavegms.tuning.modality_fit` (BUSI ``gms_test`` +
``normal_test``, BUS-BRA fold 5, Kvasir-SEG ``medico2020_val``, ISIC-2017 ``val``; each as stored and one
augmented copy), whose features ``modality_fit --cache`` keeps (``modality-test.npz``). For each kind,
``--folders`` folders of each size are drawn from that kind's images, each holding at least one image
the classifier alone gets wrong (its mistakes are what a folder must not hide). Each folder is routed as
a run routes it: :func:`~napari_wavegms.inference.modality.folder_prior` from its images, then every image
judged with that prior, and :func:`napari_wavegms.inference.routing.doubts` says which rows are flagged.

Printed per kind and size: images routed to a wrong kind and how many of them are flagged, the same for
images judged alone (no folder), and the share of rightly routed images flagged (the cost of the flags).
"Before" counts the flags of the earlier rule: none from routing (only a low mask confidence flagged a row).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_wavegms.inference.modality import FEATURES, KINDS, Modality, classify_features, folder_prior, with_prior
from napari_wavegms.inference.routing import doubts
from napari_wavegms.tuning.modality_fit import SETS


def held_out(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each held-out sample's probabilities judged alone and its true kind."""
    stored = np.load(cache / "modality-test.npz", allow_pickle=False)
    probs, kinds = [], []
    for name, *_ in SETS:
        rows = np.concatenate([stored[f"{name}.plain"], stored[f"{name}.aug"]])
        label = int(stored[f"{name}.label"][0])
        for row in rows:
            found = classify_features(dict(zip(FEATURES, row.tolist(), strict=True)))
            probs.append([found.alone[k] for k in KINDS])
            kinds.append(label)
    return np.array(probs), np.array(kinds)


def judged(alone: np.ndarray, prior: np.ndarray | None) -> tuple[int, bool]:
    """The kind an image is routed to and whether the router flags it."""
    probs = alone if prior is None else with_prior(alone, prior)[0]
    best = int(np.argmax(probs))
    found = Modality(KINDS[best], "", float(probs[best]), dict(zip(KINDS, probs.tolist(), strict=True)),
                     dict(zip(KINDS, alone.tolist(), strict=True)))
    return best, bool(doubts(found, prior))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path("runs/modcache"))
    p.add_argument("--folders", type=int, default=200)
    p.add_argument("--sizes", type=int, nargs="+", default=[20, 150])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    probs, kinds = held_out(args.cache)
    rng = np.random.default_rng(args.seed)
    print("| folder of | images | routed wrong: in folders (flagged) | routed wrong: alone (flagged) | "
          "right but flagged, in folders | flagged before |")
    print("| --- | --- | --- | --- | --- | --- |")
    total_wrong = total_flagged = 0
    for c, kind in enumerate(KINDS):
        own = np.flatnonzero(kinds == c)
        mistakes = own[probs[own].argmax(1) != c]
        for size in args.sizes:
            wrong = flagged = right = right_flagged = alone_wrong = alone_flagged = 0
            for _ in range(args.folders):
                folder = rng.choice(own, size=min(size, len(own)), replace=False)
                if len(mistakes) and not np.isin(folder, mistakes).any():
                    folder[0] = rng.choice(mistakes)
                prior = folder_prior(probs[folder])
                for i in folder:
                    best, flag = judged(probs[i], prior)
                    if best != c:
                        wrong, flagged = wrong + 1, flagged + flag
                    else:
                        right, right_flagged = right + 1, right_flagged + flag
                    best, flag = judged(probs[i], None)
                    if best != c:
                        alone_wrong, alone_flagged = alone_wrong + 1, alone_flagged + flag
            total_wrong, total_flagged = total_wrong + wrong, total_flagged + flagged
            print(f"| {kind} | {size} | {wrong} ({flagged}) | {alone_wrong} ({alone_flagged}) | "
                  f"{right_flagged / max(right, 1):.1%} | 0 |")
    print(f"\n{len(kinds)} held-out samples ({(probs.argmax(1) != kinds).sum()} mistakes alone); in folders "
          f"{total_wrong} routed wrong, {total_flagged} of them flagged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
