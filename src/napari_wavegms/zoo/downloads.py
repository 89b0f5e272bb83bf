"""The one place that knows where files come from: names, download addresses, sha256, cache, offline folders.

Every file the plugin needs at run time (Tiny-VAE weights, sample data) is a :class:`RemoteFile`.
:func:`fetch` looks for it, in order, in the offline folder given as an argument, in the folder named by
the file's environment variable (``WAVEGMS_WEIGHTS_DIR`` for weights, ``WAVEGMS_DATA_DIR`` for sample
data), and in the per-user cache (``WAVEGMS_CACHE_DIR`` overrides its place); only then does it
download, with pooch, into the cache: atomically and checked against the pinned hash, so an
interrupted or corrupted download never leaves a file behind that a later run would trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "WAVEGMS_CACHE_DIR"
OFFLINE_ENV = "WAVEGMS_OFFLINE"  # set to 1: never try the network, only offline folders and the cache
TIMEOUT_S = 60
WEIGHTS_ENV = "WAVEGMS_WEIGHTS_DIR"
DATA_ENV = "WAVEGMS_DATA_DIR"


class WeightsUnavailableError(RuntimeError):
    """A file is neither in an offline folder nor in the cache and could not be downloaded.

    Its message leads with the fix in one short line (which file, where to put it, which environment
    variable) that fits a notification: :attr:`summary`. The full text follows on the next lines: the
    address to download from, the folders searched, and last the network error's own detail, which is
    useful to an administrator but tells a user nothing (``HTTPSConnectionPool(host=…)``).
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(f"{summary}\n{details}" if details else summary)
        self.summary = summary
        self.details = details


class HashMismatchError(RuntimeError):
    """A file's content does not match its pinned sha256."""


@dataclass(frozen=True)
class RemoteFile:
    """A file known by name, with the address to download it from and its pinned sha256.

    ``relative_path`` is where it lies inside an offline folder (for data sets laid out in folders).
    ``sha256`` may be ``None`` only for files whose publisher gives no hash we could pin here; those
    are trusted on first download and their hash is recorded beside them in the cache.
    """

    relative_path: str
    url: str
    sha256: str | None
    env: str = WEIGHTS_ENV

    @property
    def name(self) -> str:
        return Path(self.relative_path).name


@dataclass(frozen=True)
class TinyVAESpec:
    """A frozen Tiny-VAE known to the registry."""

    name: str
    latent_channels: int
    encoder: RemoteFile
    decoder: RemoteFile
    hub_repo: str | None
    description: str
    # The decoder shipped inside the package (``builtin/<file>``, original keys, float16) and the sha256
    # of its tensors: built-in models, which leave the decoder out, find it there with no network.
    shipped_decoder: str | None = None
    shipped_sha256: str | None = None
    # The same for the encoder, which only training needs (it makes the target latents): so a pip
    # install trains with no network and no offline folder.
    shipped_encoder: str | None = None
    shipped_encoder_sha256: str | None = None


_TAESD_RAW = "https://github.com/madebyollin/taesd/raw/{rev}/{file}"
_TAEF2_REV = "5cccb12dc72074a4be35680c3b108548a7c69978"

TINY_VAES: dict[str, TinyVAESpec] = {
    "taef2": TinyVAESpec(
        name="taef2",
        latent_channels=32,
        encoder=RemoteFile(
            "taef2_encoder.pth",
            _TAESD_RAW.format(rev=_TAEF2_REV, file="taef2_encoder.pth"),
            "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
        ),
        decoder=RemoteFile(
            "taef2_decoder.pth",
            _TAESD_RAW.format(rev=_TAEF2_REV, file="taef2_decoder.pth"),
            "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
        ),
        hub_repo=None,
        description="Tiny autoencoder distilled from the FLUX.2 VAE (32 latent channels, MIT licence)",
        shipped_decoder="taef2_decoder.safetensors",
        shipped_sha256="8ef4e9705e543974825c24af9c35e2fcb07dfe751737f41dd3fefdbbbe84087f",
        shipped_encoder="taef2_encoder.safetensors",
        shipped_encoder_sha256="3036f2f5a6e6b4d7d00ed2ed41523f113cf41eccc278358489fadf80898edcfd",
    ),
    "taesd": TinyVAESpec(
        name="taesd",
        latent_channels=4,
        # madebyollin/taesd publishes no checksums; these are trusted on first download (see RemoteFile).
        encoder=RemoteFile("taesd_encoder.pth", _TAESD_RAW.format(rev="main", file="taesd_encoder.pth"), None),
        decoder=RemoteFile("taesd_decoder.pth", _TAESD_RAW.format(rev="main", file="taesd_decoder.pth"), None),
        hub_repo="madebyollin/taesd",
        description="Tiny autoencoder of Stable Diffusion 1/2 (4 latent channels, MIT licence): the paper's choice",
    ),
}


SHIPPED_DIR = Path(__file__).parent / "builtin"  # files that ship with the package (with their licences)


def shipped_file(name: str, part: str) -> tuple[Path, str] | None:
    """``(path, tensors sha256)`` of a Tiny-VAE ``part`` (``"encoder"`` or ``"decoder"``) shipped in
    the package, or ``None`` where none ships."""
    spec = TINY_VAES.get(name)
    if spec is None:
        return None
    if part == "encoder":
        file, sha = spec.shipped_encoder, spec.shipped_encoder_sha256
    elif part == "decoder":
        file, sha = spec.shipped_decoder, spec.shipped_sha256
    else:
        raise ValueError(f"part must be 'encoder' or 'decoder', not {part!r}")
    if file is None or sha is None:
        return None
    path = SHIPPED_DIR / file
    return (path, sha) if path.is_file() else None


def shipped_decoder(name: str) -> tuple[Path, str] | None:
    """The decoder shipped in the package (:func:`shipped_file`).

    One copy serves every built-in model (they share the frozen TAEF2 decoder), so a fresh install
    segments with no network, no ``WAVEGMS_WEIGHTS_DIR`` and an empty cache.
    """
    return shipped_file(name, "decoder")


def shipped_encoder(name: str) -> tuple[Path, str] | None:
    """The encoder shipped in the package (:func:`shipped_file`): a fresh install trains offline."""
    return shipped_file(name, "encoder")


def offline() -> bool:
    """Whether ``WAVEGMS_OFFLINE`` forbids the network (set and not ``0``)."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def cache_dir() -> Path:
    """The per-user cache folder (``WAVEGMS_CACHE_DIR`` if set), created on demand."""
    override = os.environ.get(CACHE_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        import pooch

        path = Path(pooch.os_cache("napari-wavegms"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


Verifier = Callable[[Path], object]  # raises HashMismatchError when a file is not the expected one


def _verified(path: Path, remote: RemoteFile, verify: Verifier | None = None) -> Path:
    if verify is not None:
        verify(path)
    elif remote.sha256 is not None:
        actual = sha256_of(path)
        if actual != remote.sha256:
            raise HashMismatchError(
                f"{path} does not match the published file {remote.name} "
                f"(sha256 {actual}, expected {remote.sha256}): it is corrupt or a different version. "
                f"Delete it and download {remote.url} again."
            )
    return path


def offline_folders(remote: RemoteFile, offline_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched before the cache: the argument, then the file's environment variable."""
    folders = [Path(offline_dir).expanduser()] if offline_dir else []
    env_value = os.environ.get(remote.env)
    if env_value:
        folders += [Path(p).expanduser() for p in env_value.split(os.pathsep) if p]
    return folders


def fetch(
    remote: RemoteFile,
    offline_dir: str | os.PathLike | None = None,
    *,
    allow_download: bool = True,
    verify: Verifier | None = None,
) -> Path:
    """Return a verified local path to ``remote``, downloading it into the cache if needed.

    ``verify`` replaces the file sha256 check for files pinned by their content rather than their bytes
    (a sample mask pinned by its pixels); it raises :class:`HashMismatchError` for a wrong file.
    """
    for folder in offline_folders(remote, offline_dir):
        candidate = folder / remote.relative_path
        if candidate.is_file():
            return _verified(candidate, remote, verify)

    cache = cache_dir()
    cached = cache / remote.relative_path
    if cached.is_file():
        try:
            return _verified(cached, remote, verify)
        except HashMismatchError:
            log.warning("cached %s is corrupt; downloading it again", cached)
            cached.unlink()

    searched = [str(f) for f in offline_folders(remote, offline_dir)] + [str(cache)]
    help_text = (
        f"Download {remote.url}\nand put it (as {remote.relative_path}) in a folder named by the "
        f"environment variable {remote.env}, or in the cache folder {cache}.\nSearched: {', '.join(searched)}."
    )
    if not allow_download or offline():
        why = f"{OFFLINE_ENV} is set" if allow_download else "downloads are off"
        raise WeightsUnavailableError(
            missing_summary(remote, "working offline"),
            f"{remote.name} is not available offline ({why}) and not in the cache. {help_text}",
        )
    return _download(remote, cached, help_text, verify)


def missing_summary(remote: RemoteFile, why: str) -> str:
    """The first line of a missing-file error: the fix, short enough for a notification.

    It names the exact place, relative path included (``$WAVEGMS_DATA_DIR/kvasir-seg/images/….jpg``):
    a file put at the top of the folder would not be found.
    """
    return f"Put {remote.name} at ${remote.env}/{remote.relative_path} ({why})."


def _download(remote: RemoteFile, target: Path, help_text: str, verify: Verifier | None = None) -> Path:
    import pooch
    import requests

    target.parent.mkdir(parents=True, exist_ok=True)
    known_hash = f"sha256:{remote.sha256}" if remote.sha256 else None
    log.info("downloading %s from %s", remote.name, remote.url)
    try:
        # pooch downloads to a temporary file in the same folder, checks the hash and only then
        # renames it into place; on a mismatch it deletes the temporary file and raises ValueError.
        path = pooch.retrieve(
            remote.url, known_hash=known_hash, fname=target.name, path=target.parent,
            downloader=pooch.HTTPDownloader(progressbar=False, timeout=TIMEOUT_S),
        )
    except ValueError as err:
        raise HashMismatchError(
            f"the download of {remote.name} from {remote.url} is corrupt or not the pinned version "
            f"({err}); nothing was kept. {help_text}"
        ) from err
    except (requests.RequestException, OSError) as err:
        raise WeightsUnavailableError(
            missing_summary(remote, "no network to download it"),
            f"could not download {remote.name} from {remote.url}. {help_text}\n"
            f"Network error: {type(err).__name__}: {err}",
        ) from err
    if verify is not None:
        try:
            verify(Path(path))
        except HashMismatchError:
            Path(path).unlink(missing_ok=True)
            raise
    elif remote.sha256 is None:
        digest = sha256_of(Path(path))
        log.warning("%s has no pinned checksum; trusting this download (sha256 %s)", remote.name, digest)
    return Path(path)
