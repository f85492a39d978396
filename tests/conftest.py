"""Shared fixtures: the real data root, a per-session decode cache, tiny image folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# Resolved at import, before the session moves into its temporary working directory.
DATA_ROOT = Path(os.environ.get("BENCH_DATA_DIR") or REPO.parent / "shared" / "data").resolve()


def _data_root() -> Path:
    root = DATA_ROOT
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(
            f"real data sets not found at {root}: set BENCH_DATA_DIR to the shared data root "
            "(see README.md, 'Running the tests')"
        )
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every session decodes from scratch into its own cache (the decode path is under test too),
    reading the real data sets from the shared root."""
    cache = tmp_path_factory.mktemp("bench-cache")
    saved = {k: os.environ.get(k) for k in ("BENCH_CACHE_DIR", "BENCH_DATA_DIR")}
    os.environ["BENCH_CACHE_DIR"] = str(cache)
    os.environ["BENCH_DATA_DIR"] = str(_data_root())
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def tracking_store(tmp_path_factory: pytest.TempPathFactory):
    """One sqlite tracking store for the whole session (creating one runs migrations: seconds).

    The session also works in a temporary directory, so MLflow's default ./mlruns
    artifact folder and any stray mlflow.db never land in the repository.
    """
    workdir = tmp_path_factory.mktemp("workdir")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    for key in saved:
        os.environ.pop(key, None)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    cwd = os.getcwd()
    os.chdir(workdir)
    yield uri
    os.chdir(cwd)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module", autouse=True)
def _tracking_uri_left_as_found(tracking_store):
    """Fails the module that leaves another tracking URI behind, rather than every module after it
    (which would then retry for minutes against a server that has stopped)."""
    from mlflow.tracking._tracking_service import utils

    yield
    pinned, current = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    utils._tracking_uri = None
    os.environ["MLFLOW_TRACKING_URI"] = tracking_store
    if pinned is not None or current != tracking_store:
        pytest.fail(f"this module left the tracking URI at {pinned or current!r} (mlflow.set_tracking_uri pins it "
                    "process-wide); set MLFLOW_TRACKING_URI with monkeypatch instead")


@pytest.fixture
def make_image_folder():
    return write_image_folder


def write_image_folder(root: Path, classes=("cats", "dogs"), per_class=(6, 3), size=12) -> Path:
    """A tiny train/test image-folder tree of PNGs whose class is visible in the colour."""
    from PIL import Image

    for split, count in zip(("train", "test"), per_class):
        for label, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = torch.full((3, size, size), 40 + 150 * label, dtype=torch.uint8)
                image[0, i % size, :] = 255
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / split / cls / f"{i:03d}.png")
    return root


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by selenium; skipped off CI when it is not installed."""
    binary, driver_path = chromium(), shutil.which("chromedriver")
    if not (binary and driver_path):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        # No background networking: this machine refuses every connection but loopback.
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()
