"""Install a headless Chromium for the browser test (tests/integration/test_report_browser.py): `make browser`.

Playwright's own `playwright install` downloads from a CDN that machines limited to the package
registries cannot reach. This takes Chromium from the npm registry instead: the @sparticuz/chromium
package (MIT), a headless Chromium built for Linux x86-64 with its few libraries, shipped
brotli-compressed. The tarball is checked against its pinned SHA-256, every archive is extracted with
tarfile's "data" filter (no absolute paths, no escape from the target folder, no devices or links out),
and a wrapper script `<dest>/chromium` sets the library and font paths, then runs the browser.

    python pipelines/get_chromium.py [dest]      (default: .browser)
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "147.0.0"
URL = f"https://registry.npmjs.org/@sparticuz/chromium/-/chromium-{VERSION}.tgz"
SHA256 = "18fe5404ce845594cd7d592fc07f37a19514079ba4d9c27192ad8b908743f16b"
FONTS = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>{fonts}</dir>
  <dir>/usr/share/fonts</dir>
  <dir>/usr/local/share/fonts</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""
WRAPPER = """#!/bin/sh
# Headless Chromium (@sparticuz/chromium {version}) with its libraries and fonts: pipelines/get_chromium.py
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$here/root/lib:$here/root${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
export FONTCONFIG_PATH="$here/root"
exec "$here/root/chromium" --no-sandbox --no-zygote "$@"
"""


def main(dest: Path) -> None:
    import brotli  # pip install brotli (make browser does)

    if sys.platform != "linux":
        raise SystemExit("error: this Chromium build is for Linux x86-64; elsewhere use `playwright install chromium`")
    print(f"downloading {URL}", flush=True)
    with urllib.request.urlopen(URL, timeout=300) as response:
        blob = response.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"error: {URL} has SHA-256 {digest}, expected {SHA256}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "root").mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as package:
        packed = {m.name: m for m in package.getmembers() if m.name.startswith("package/bin/")}
        for name, member in packed.items():
            data = brotli.decompress(package.extractfile(member).read())
            stem = Path(name).name.removesuffix(".br")
            if stem == "chromium":
                (tmp / "root" / "chromium").write_bytes(data)
                (tmp / "root" / "chromium").chmod(0o755)
            elif stem.endswith(".tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                    inner.extractall(tmp / "root", filter="data")
    # the package's fonts.conf names Lambda's folders: ours names its fonts and the system's, by absolute path
    (tmp / "root" / "fonts.conf").write_text(FONTS.format(fonts=(dest / "root" / "fonts").resolve(),
                                                          cache=(dest / "root" / "fonts-cache").resolve()))
    wrapper = tmp / "chromium"
    wrapper.write_text(WRAPPER.format(version=VERSION))
    wrapper.chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    print(f"headless Chromium {VERSION} in {dest}/ (run {dest}/chromium --version)", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".browser"))
