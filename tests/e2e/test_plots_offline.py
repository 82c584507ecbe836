"""`dvc plots show` draws its curves on a machine without network, checked in headless Chromium.

DVC's stock page loads Vega, Vega-Lite and vega-embed from a CDN: offline, every Vega plot is
blank. The repository's page (.dvc/config `plots.html_template` -> .dvc/plots/offline.html,
built by scripts/vendor_vega.sh) carries them inline. So: a tiny digits `dvc repro evaluate`
in a repository copy, `dvc plots show`, and the page opened from disk in a Chromium that
cannot resolve a name or reach anything. The Loss and Accuracy plots must show both of their
curves, read from the canvas vega-embed draws into: at many x positions, two separate runs of
line-coloured pixels (train and validation); an empty chart, or the legend alone, has none.
The same check on DVC's stock page must find nothing drawn: that proves the browser really
was offline, so the first check cannot pass because a network happened to be there.

The screenshot of the offline page is kept as ``plots_offline.png`` in the test's tmp dir
(saved before the assertions, so a failure can be seen). Skipped, saying why, without
Chromium, chromedriver or selenium.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import OFFLINE_FLAGS, chromium, skip_reason
from tests.helpers.repo import configure_tiny_digits, make_repo_copy, run

pytestmark = pytest.mark.e2e

CURVES = ("Loss", "Accuracy")  # dvc.yaml's plot ids: DVC uses them as the plots' div ids
DRAW_DEADLINE_S = 60
# Columns where both curves are drawn: the plot area is ~240 px wide and the two curves of a
# 2-epoch run span all of it (they may cross once); the legend's symbols take ~10 columns.
MIN_TWO_CURVE_COLUMNS = 60

# Per plot div: vega-embed's canvas, and per pixel column the number of separate vertical
# runs of line-coloured pixels (saturated: Vega's category colours; axes, grid and text are
# grey or black, the background white or transparent).
READ_PLOTS_JS = """
const out = {vegaEmbed: typeof vegaEmbed, plots: {}};
for (const id of arguments[0]) {
  const canvas = document.querySelector('#' + CSS.escape(id) + ' canvas');
  if (!canvas || !canvas.width || !canvas.height) { out.plots[id] = null; continue; }
  const w = canvas.width, h = canvas.height;
  const px = canvas.getContext('2d').getImageData(0, 0, w, h).data;
  let oneOrMore = 0, twoOrMore = 0;
  for (let x = 0; x < w; x++) {
    let runs = 0, gap = Infinity;
    for (let y = 0; y < h; y++) {
      const i = 4 * (y * w + x);
      const line = px[i + 3] > 128 &&
        Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 60;
      if (line) { if (gap > 3) runs++; gap = 0; } else { gap++; }
    }
    if (runs >= 1) oneOrMore++;
    if (runs >= 2) twoOrMore++;
  }
  out.plots[id] = {width: w, height: h, oneOrMore, twoOrMore};
}
out.ready = document.readyState;
return out;
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``dvc plots show`` of a tiny digits run: with the repository's page ("offline") and
    with DVC's stock one ("stock"); each its index.html."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from dvc_render.html import PAGE_HTML

    base = tmp_path_factory.mktemp("plots")
    repo = make_repo_copy(base / "repo")
    configure_tiny_digits(repo)
    run(["dvc", "repro", "evaluate"], repo)  # train_history.csv, confusion.csv, the PNGs
    run(["dvc", "plots", "show", "-o", str(base / "offline")], repo)  # .dvc/config's page
    stock = base / "stock.html"
    stock.write_text(PAGE_HTML, encoding="utf-8")
    run(["dvc", "plots", "show", "--html-template", str(stock), "-o", str(base / "stock")], repo)
    return {name: base / name / "index.html" for name in ("offline", "stock")}


def read_plots(driver: Any, page: Path, *, drawn: bool) -> dict[str, Any]:
    """Open ``page`` and read its Loss and Accuracy canvases: with ``drawn``, poll until both
    show two curves (vega-embed renders asynchronously) or the deadline passes; without, read
    once the page has loaded (its scripts have run or failed: nothing can draw later)."""
    driver.set_page_load_timeout(DRAW_DEADLINE_S)
    driver.get(page.as_uri())
    deadline = time.monotonic() + DRAW_DEADLINE_S
    while True:
        seen = driver.execute_script(READ_PLOTS_JS, list(CURVES))
        if not drawn or time.monotonic() > deadline or all(
                p and p["twoOrMore"] >= MIN_TWO_CURVE_COLUMNS for p in seen["plots"].values()):
            return seen
        time.sleep(0.5)


def test_plots_show_draws_loss_and_accuracy_offline(pages: dict[str, Path]) -> None:
    page = pages["offline"]
    html = page.read_text(encoding="utf-8")
    assert "<script src" not in html, "the page loads a script from elsewhere"
    shot = page.parent.parent / "plots_offline.png"
    with chromium(page.parent.parent / "profile-offline", *OFFLINE_FLAGS,
                  window=(1200, 1000)) as driver:
        seen = read_plots(driver, page, drawn=True)
        driver.save_screenshot(str(shot))
        console = driver.get_log("browser")
    assert seen["vegaEmbed"] == "function", f"vega-embed did not load offline: {console}"
    for name in CURVES:
        plot = seen["plots"][name]
        assert plot is not None, f"{name}: no canvas drawn ({shot}); console: {console}"
        assert plot["twoOrMore"] >= MIN_TWO_CURVE_COLUMNS, (
            f"{name}: train and validation curves not both drawn: {plot} ({shot})")
    # Nothing failed on the page: no script error, no request that could not go out.
    assert not [e for e in console if e["level"] == "SEVERE"], console


def test_the_stock_page_draws_nothing_in_the_same_browser(pages: dict[str, Path]) -> None:
    """The control: DVC's CDN page, opened the same way, stays blank."""
    page = pages["stock"]
    assert "<script src=" in page.read_text(encoding="utf-8")  # it is the CDN page
    with chromium(page.parent.parent / "profile-stock", *OFFLINE_FLAGS) as driver:
        seen = read_plots(driver, page, drawn=False)
        console = driver.get_log("browser")
    assert seen["ready"] == "complete", seen
    assert seen["vegaEmbed"] == "undefined", f"the CDN answered: not offline ({console})"
    assert seen["plots"] == {name: None for name in CURVES}, seen
