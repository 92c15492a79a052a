"""Headless Chromium (Debian's) for the report tests: a screenshot, checked not to be blank."""

import shutil
import subprocess
from pathlib import Path

import pytest

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is not installed"
)


def assert_renders(page: Path, tmp_path: Path, height: int = 1600) -> None:
    """Chromium renders ``page`` into a screenshot with text, tables and figures (not blank)."""
    from PIL import Image, ImageStat

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size=1200,{height}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists()
    image = Image.open(shot).convert("L")
    assert ImageStat.Stat(image).stddev[0] > 10  # not blank
    assert len(set(image.get_flattened_data())) > 50  # distinct grey levels
