"""The page `dvc plots show` fills (.dvc/plots/offline.html) carries the pinned Vega builds.

Checked without npm or a browser (tests/e2e/test_plots_offline.py opens the page offline):
.dvc/config names the page; each inlined script is byte for byte the npm file pinned in
.dvc/plots/vega.pins, in the majors dvc-render's own page uses (its plot templates are
written for them); and DVC, filling the page, adds no CDN script to it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dvc.config import Config
from dvc_render import render_html
from dvc_render.vega import VegaRenderer

from tests.helpers.repo import ROOT

PLOTS = ROOT / ".dvc/plots"
# What scripts/vendor_vega.sh writes around each file it inlines.
VENDORED = re.compile(rb'<script data-vendored="([^"@]+)@([^"]+)" data-sha256="([0-9a-f]{64})">'
                      rb"\n(.*?)\n    </script>", re.S)


def pins() -> list[tuple[str, str, str, str]]:
    """(package, version, file, sha256) per pin, in page order."""
    lines = (PLOTS / "vega.pins").read_text().splitlines()
    return [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]


def page() -> Path:
    """The page .dvc/config names, resolved as `dvc plots show` does (relative to .dvc/)."""
    config = Config(ROOT / ".dvc", validate=True)
    return ROOT / ".dvc" / config["plots"]["html_template"]


def test_the_config_names_the_offline_page() -> None:
    assert page() == PLOTS / "offline.html"


def test_the_inlined_scripts_are_the_pinned_npm_files() -> None:
    found = [(name.decode(), version.decode(), sha.decode(), hashlib.sha256(body).hexdigest())
             for name, version, sha, body in VENDORED.findall(page().read_bytes())]
    assert [(n, v, s) for n, v, _, s in pins()] == [(n, v, s) for n, v, s, _ in found]
    for name, version, pinned, actual in found:
        assert actual == pinned, f"{name}@{version}: inlined bytes are not the pinned file"


def test_the_pins_keep_dvc_renders_majors() -> None:
    """dvc-render's page loads ``vega@5.x``, ``vega-lite@5.x``, ``vega-embed@6.x`` from a CDN."""
    stock = dict(re.findall(r"/npm/([a-z-]+)@(\d+)\.", VegaRenderer.SCRIPTS))
    assert set(stock) == {"vega", "vega-lite", "vega-embed"}, VegaRenderer.SCRIPTS
    assert {name: version.split(".")[0] for name, version, _, _ in pins()} == stock


def test_dvc_fills_the_page_without_cdn_scripts(tmp_path: Path) -> None:
    loss = VegaRenderer([{"epoch": "0", "val_loss": "1.5"}, {"epoch": "1", "val_loss": "0.9"}],
                        "Loss", template="linear", x="epoch", y="val_loss")
    out = tmp_path / "dvc_plots/index.html"
    render_html([loss], out, html_template=str(page()))
    html = out.read_text(encoding="utf-8")
    assert "vegaEmbed('#Loss', spec);" in html  # the plot went where {plot_divs} was
    assert "{plot_divs}" not in html
    assert not re.search(r"<script[^>]*\ssrc=", html), "a script loaded from elsewhere"
    assert html.count("<script data-vendored=") == len(pins())
