"""The built wheel holds every module of the three code folders and the console's files, and no top-level `platform`."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"platform": "mediamatch/platform", "deployments": "mediamatch/deployments", "indexing": "mediamatch/indexing"}


def test_wheel_contains_every_module(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mediamatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{FOLDERS[path.relative_to(ROOT).parts[0]]}/{'/'.join(path.relative_to(ROOT).parts[1:])}"
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*.py")
    }
    assert expected and expected <= names, sorted(expected - names)
    console = {f"mediamatch/deployments/console/{p.name}" for p in (ROOT / "deployments" / "console").iterdir()}
    assert console <= names, sorted(console - names)  # the web console's templates, stylesheet and script
    assert not any(n.startswith("platform/") for n in names)


def test_platform_does_not_shadow_the_standard_library():
    assert not (ROOT / "platform" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import platform, mediamatch.platform.settings; print(platform.system())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip()
