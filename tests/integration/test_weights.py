"""Weights registry and downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from conftest import WEIGHTS
from napari_wavegms.network import load_tiny_vae
from napari_wavegms.zoo import downloads as weights

TAEF2_DEC = weights.TINY_VAES["taef2"].decoder


@pytest.fixture
def served(tmp_path: Path):
    """A static HTTP server on 127.0.0.1 over a folder; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(weights.CACHE_ENV, str(cache))
    return cache


def remote_at(base: str) -> weights.RemoteFile:
    return weights.RemoteFile(TAEF2_DEC.relative_path, f"{base}/{TAEF2_DEC.name}", TAEF2_DEC.sha256)


def test_offline_folder_from_environment_is_used_and_verified():
    path = weights.fetch(TAEF2_DEC)
    assert path == WEIGHTS / "taef2_decoder.pth"


def test_offline_folder_with_a_corrupt_file_is_refused(tmp_path: Path):
    bad = tmp_path / TAEF2_DEC.name
    bad.write_bytes((WEIGHTS / TAEF2_DEC.name).read_bytes()[:-10])
    with pytest.raises(weights.HashMismatchError, match=r"taef2_decoder\.pth"):
        weights.fetch(TAEF2_DEC, offline_dir=tmp_path)


def test_download_good_file_into_cache(served, no_offline: Path):
    root, base = served
    shutil.copy(WEIGHTS / TAEF2_DEC.name, root / TAEF2_DEC.name)
    path = weights.fetch(remote_at(base))
    assert path == no_offline / TAEF2_DEC.name
    assert weights.sha256_of(path) == TAEF2_DEC.sha256
    # Second call: served from the cache even when the server is gone.
    (root / TAEF2_DEC.name).unlink()
    assert weights.fetch(remote_at(base)) == path


def test_download_corrupt_file_leaves_nothing_in_cache(served, no_offline: Path):
    root, base = served
    (root / TAEF2_DEC.name).write_bytes(b"not the weights")
    with pytest.raises(weights.HashMismatchError, match="nothing was kept"):
        weights.fetch(remote_at(base))
    assert not any(p.is_file() for p in no_offline.rglob("*"))


def test_corrupt_cached_file_is_downloaded_again(served, no_offline: Path):
    root, base = served
    shutil.copy(WEIGHTS / TAEF2_DEC.name, root / TAEF2_DEC.name)
    no_offline.mkdir(parents=True, exist_ok=True)
    (no_offline / TAEF2_DEC.name).write_bytes(b"truncated")
    path = weights.fetch(remote_at(base))
    assert weights.sha256_of(path) == TAEF2_DEC.sha256


def test_a_file_pinned_by_its_content_is_checked_by_its_verifier(served, no_offline: Path):
    """A downloaded sample mask (no byte hash, pinned by its pixels) that fails its check is not kept."""
    root, base = served
    (root / "mask.jpg").write_bytes(b"a mask")
    remote = weights.RemoteFile("mask.jpg", f"{base}/mask.jpg", None)
    seen: list[bytes] = []

    def refuse(path: Path) -> None:
        seen.append(path.read_bytes())
        raise weights.HashMismatchError(f"{path}: not the pinned mask")

    with pytest.raises(weights.HashMismatchError, match="not the pinned mask"):
        weights.fetch(remote, verify=refuse)
    assert seen == [b"a mask"]
    assert not any(p.is_file() for p in no_offline.rglob("*"))
    assert weights.fetch(remote, verify=seen.append).read_bytes() == b"a mask"


def assert_leads_with_the_fix(err: weights.WeightsUnavailableError, remote: weights.RemoteFile) -> list[str]:
    """The first line is the fix (file, variable), short enough for a notification; the rest follows."""
    lines = str(err).splitlines()
    assert lines[0] == err.summary and len(lines) > 1
    # the exact place, relative path included: a file put at the top of the folder would not be found
    assert lines[0].startswith(f"Put {remote.name} at ${remote.env}/{remote.relative_path} (")
    assert len(lines[0]) <= 160, lines[0]  # a napari notification shows 160 characters uncut
    assert "ConnectionPool" not in lines[0] and "Error" not in lines[0]
    return lines


def test_server_down_gives_clear_error(no_offline: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for scheme in ("http", "https"):  # https: requests' raw "HTTPSConnectionPool(host=…)" text
        remote = remote_at(f"{scheme}://127.0.0.1:{port}")
        with pytest.raises(weights.WeightsUnavailableError) as info:
            weights.fetch(remote)
        lines = assert_leads_with_the_fix(info.value, remote)
        message = str(info.value)
        assert "could not download taef2_decoder.pth" in message and remote.url in message
        assert weights.WEIGHTS_ENV in message and str(no_offline) in message
        assert lines[-1].startswith("Network error: ")  # the network's own words come last
        assert f"{scheme.upper()}ConnectionPool" in lines[-1]
        assert not any(f"{scheme.upper()}ConnectionPool" in line for line in lines[:-1])
    assert not any(p.is_file() for p in no_offline.rglob("*"))


def test_offline_with_nothing_cached_says_what_to_download(no_offline: Path, monkeypatch):
    with pytest.raises(weights.WeightsUnavailableError) as info:
        weights.fetch(TAEF2_DEC, allow_download=False)
    assert_leads_with_the_fix(info.value, TAEF2_DEC)
    assert TAEF2_DEC.url in str(info.value)
    assert weights.WEIGHTS_ENV in str(info.value) and str(no_offline) in str(info.value)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(weights.WeightsUnavailableError, match="not available offline") as info:
        weights.fetch(TAEF2_DEC)
    assert "offline" in info.value.summary


def test_a_missing_sample_file_names_its_own_variable(no_offline: Path, monkeypatch):
    """Sample data is looked for under WAVEGMS_DATA_DIR, and its message says so."""
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    remote = weights.RemoteFile("kvasir-seg/images/x.jpg", "https://example.org/x.jpg", None, env=weights.DATA_ENV)
    with pytest.raises(weights.WeightsUnavailableError) as info:
        weights.fetch(remote)
    assert weights.DATA_ENV in assert_leads_with_the_fix(info.value, remote)[0]
    assert "kvasir-seg/images/x.jpg" in str(info.value)


def test_tiny_vae_from_a_local_folder_of_pth_files():
    vae = load_tiny_vae(WEIGHTS)
    assert vae.latent_channels == 32 and vae.pool


def test_tiny_vae_from_a_diffusers_folder(tmp_path: Path, taef2):
    """The diffusers route: a plain TAESD-layout autoencoder saved with save_pretrained loads back."""
    from napari_wavegms.network.tiny_vae import TinyVAE

    vae = TinyVAE.random(4)
    vae.autoencoder.save_pretrained(tmp_path / "taesd-like")
    loaded = load_tiny_vae(tmp_path / "taesd-like")
    assert loaded.latent_channels == 4 and not loaded.pool


def test_registry_knows_taef2_and_taesd():
    assert weights.TINY_VAES["taef2"].latent_channels == 32
    assert weights.TINY_VAES["taesd"].latent_channels == 4
    assert weights.TINY_VAES["taesd"].hub_repo == "madebyollin/taesd"
