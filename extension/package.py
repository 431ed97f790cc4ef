"""Package the extension for both browsers in one command: ``python extension/package.py``.

extension/src/ is the Chromium extension itself (load it unpacked as is). Firefox's MV3 wants background
*scripts* rather than a service worker, and an add-on id, so its manifest is derived here. Writes
``extension/dist/{chrome,firefox}/`` (unpacked, what ``web-ext lint`` and a temporary Firefox load use) and a zip
per store: ``extension/dist/fakewatch-{chrome,firefox}-VERSION.zip``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

SOURCE_DIR = Path(__file__).resolve().parent / "src"
DIST_DIR = Path(__file__).resolve().parent / "dist"
# Background scripts in load order: Firefox has no importScripts in an event page, so it loads them all.
BACKGROUND_SCRIPTS = ["settings.js", "api.js", "images.js", "videos.js", "background.js"]
GECKO_ID = "fakewatch@fakewatch.invalid"
# The ESR that understands data_collection_permissions (140); Firefox for Android did in 142.
FIREFOX_MIN_VERSION = "140.0"
FIREFOX_ANDROID_MIN_VERSION = "142.0"
# Images and the address of the page they are on leave the browser, for the fakewatch server the person configures.
FIREFOX_DATA_COLLECTION = {"required": ["websiteContent", "browsingActivity"]}


def read_manifest(source: Path = SOURCE_DIR) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text())
    return manifest


def firefox_manifest(chrome: dict[str, Any]) -> dict[str, Any]:
    """The Chromium manifest rewritten for Firefox: background scripts, an add-on id, no Chrome-only keys."""
    manifest = {key: value for key, value in chrome.items() if key != "minimum_chrome_version"}
    manifest["background"] = {"scripts": BACKGROUND_SCRIPTS}
    manifest["browser_specific_settings"] = {"gecko": {
        "id": GECKO_ID, "strict_min_version": FIREFOX_MIN_VERSION, "data_collection_permissions": FIREFOX_DATA_COLLECTION},
        "gecko_android": {"strict_min_version": FIREFOX_ANDROID_MIN_VERSION}}
    return manifest


def write_unpacked(manifest: dict[str, Any], target: Path, source: Path = SOURCE_DIR) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("manifest.json", ".*"))
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def zip_folder(folder: Path, archive: Path) -> Path:
    """A store upload: the folder's files at the zip's root, in a stable order."""
    archive.unlink(missing_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            bundle.write(path, path.relative_to(folder).as_posix())
    return archive


def package(dist: Path = DIST_DIR, source: Path = SOURCE_DIR) -> dict[str, Path]:
    """Write both unpacked builds and both zips; returns {"chrome": zip, "firefox": zip}."""
    chrome = read_manifest(source)
    version = chrome["version"]
    builds = {"chrome": chrome, "firefox": firefox_manifest(chrome)}
    dist.mkdir(parents=True, exist_ok=True)
    return {browser: zip_folder(write_unpacked(manifest, dist / browser, source), dist / f"fakewatch-{browser}-{version}.zip")
            for browser, manifest in builds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=DIST_DIR, help="where to write the builds (default extension/dist)")
    for browser, archive in package(parser.parse_args().dist).items():
        print(f"{browser}: {archive}")


if __name__ == "__main__":
    main()
