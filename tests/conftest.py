"""Shared fixtures: real weights and real data from ../shared, an isolated cache per test session.

The tests are in three folders: ``unit/`` (no ../shared: runs on a bare checkout), ``integration/`` (real
weights and images from ../shared) and ``gui/`` (real napari viewers under Xvfb, and ../shared). A run
that collects integration or gui tests without ../shared stops at once and says so, rather than
skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# OpenMP threads that spin while waiting make small CPU forwards 10× slower on a loaded 2-core CI box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch must be imported before Qt creates its application (NAPARI.md).
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WAVEGMS_SHARED", REPO.parent / "shared")).resolve()
WEIGHTS = SHARED / "weights"
BUSI = SHARED / "data" / "busi"
KVASIR = SHARED / "data" / "kvasir-seg"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--other-precision", action="store_true",
        help="run as if this CPU were the other kind: bfloat16 where it has no native bf16, float32 where it "
        "has (sets WAVEGMS_CPU_BF16), so both precision paths are tested on any machine",
    )


def _cpu_precision(config: pytest.Config) -> str:
    """Force the other CPU precision path when asked; the name of the path ``auto`` takes in this run."""
    from napari_wavegms.core.device import CPU_BF16_ENV, native_bf16

    if config.getoption("--other-precision"):
        os.environ.pop(CPU_BF16_ENV, None)
        os.environ[CPU_BF16_ENV] = "0" if native_bf16(torch.device("cpu")) else "1"
    return "bf16" if native_bf16(torch.device("cpu")) else "fp32"


def pytest_report_header(config: pytest.Config) -> str:
    forced = os.environ.get("WAVEGMS_CPU_BF16")
    how = f"forced with WAVEGMS_CPU_BF16={forced}" if forced else "native choice of this CPU"
    return f"napari-wavegms: auto precision on the CPU is {config.stash[CPU_PRECISION]} ({how})"


CPU_PRECISION = pytest.StashKey[str]()


HAVE_SHARED = (WEIGHTS / "taef2_decoder.pth").is_file()
NEEDS_SHARED = ("integration", "gui")  # the test folders that read ../shared


def pytest_configure(config: pytest.Config) -> None:
    config.stash[CPU_PRECISION] = _cpu_precision(config)
    if HAVE_SHARED:
        os.environ["WAVEGMS_WEIGHTS_DIR"] = str(WEIGHTS)
        os.environ["WAVEGMS_DATA_DIR"] = str(SHARED / "data")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_SHARED:
        return
    tests = Path(__file__).parent
    needing = [item for item in items if item.path.relative_to(tests).parts[0] in NEEDS_SHARED]
    if needing:
        raise pytest.UsageError(
            f"{len(needing)} of the collected tests (tests/integration, tests/gui) need ../shared beside the "
            f"checkout (looked in {SHARED}); `pytest tests/unit` runs without it"
        )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real cache."""
    monkeypatch.setenv("WAVEGMS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def taef2():
    from napari_wavegms.network import load_tiny_vae

    return load_tiny_vae("taef2", WEIGHTS)


#: The largest change in a soft mask (0..1) that the arithmetic of each precision may make between two
#: computations of the same image (batched or alone, a slice or a stack): measured 0.031 in bfloat16 on
#: the seeded untrained model, 5e-5 in float32. A difference the engine means to make is larger.
SOFT_ATOL = {"fp32": 1e-3, "bf16": 0.05}


def soft_atol(precision: str) -> float:
    return SOFT_ATOL[precision]


def drain(job) -> tuple[list, object]:
    """Run a job generator to its end: every event it yielded, and what it returned."""
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return events, stop.value


def link_busi_pairs(root: Path, names: list[str]) -> Path:
    """A data folder of real BUSI pairs as symlinks: the shared data is never copied or touched."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for n in names:
            os.symlink(BUSI / sub / f"{n}.png", root / sub / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def busi_names() -> list[str]:
    """Eight GMS-test BUSI names with lesions and eight from the training split."""
    test = (BUSI / "splits" / "gms_test.txt").read_text().split()
    train = (BUSI / "splits" / "gms_train.txt").read_text().split()
    return test[:8] + train[:8]


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory, taef2) -> Path:
    """An untrained Wave-GMS (seeded) on the real TAEF2 decoder, saved as a checkpoint at 64²."""
    from napari_wavegms.network import WaveGMS
    from napari_wavegms.network.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = WaveGMS(taef2, image_size=64)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.safetensors", model, {"note": "untrained"})


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the user's remembered widget settings."""
    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("WAVEGMS_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def user_models_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test lists, writes or prefers the user's real models: each gets an empty models folder."""
    folder = tmp_path_factory.mktemp("models")
    monkeypatch.setenv("WAVEGMS_MODELS_DIR", str(folder))
    return folder
