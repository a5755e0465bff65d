"""The rendered report in a real headless browser (Debian's chromium): screenshot and checks.

``check_page(html)`` loads a copy of the page with a small script appended that, after the load
event, records every ``<img>``'s ``naturalWidth`` and whether the page is wider than the
viewport (``document.documentElement.scrollWidth`` > ``clientWidth``), naming the widest
elements that stick out outside a horizontal scroll box; chromium's ``--dump-dom`` returns
the record. ``screenshot(html, png)`` writes a PNG of the top of the page.

Command line (``make report-shot``)::

    python -m scoresde.report.browser reports/report.html --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, vw = root.clientWidth;
  const images = [...document.images].map(i => ({id: i.closest("figure")?.id || i.alt.slice(0, 40),
                                                 complete: i.complete, width: i.naturalWidth}));
  const scrolls = e => e.closest(".wide, pre");
  const over = [...document.body.querySelectorAll("*")]
    .filter(e => !scrolls(e) && e.getBoundingClientRect().right > vw + 0.5)
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "")
              + " right=" + Math.round(e.getBoundingClientRect().right));
  const out = document.createElement("pre");
  out.id = "scoresde-probe";
  out.textContent = JSON.stringify({viewport: vw, scrollWidth: root.scrollWidth, images,
                                    overflowing: over.slice(0, 20)});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    """The chromium executable: $CHROMIUM, else the first of CANDIDATES on PATH, else None."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def _run(args: list[str], timeout: float) -> str:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found: install Debian's chromium (apt-get install "
                                "chromium) or set CHROMIUM to a Chrome/Chromium executable")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={profile}", *args]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def check_page(page: str | os.PathLike, width: int = 1280, height: int = 900,
               timeout: float = 120) -> dict:
    """``{viewport, scrollWidth, images: [{id, complete, width}], overflowing: [...]}``."""
    page = Path(page)
    text = page.read_text(encoding="utf-8")
    probe = text.replace("</body>", _PROBE + "</body>") if "</body>" in text else text + _PROBE
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp, page.name)
        copy.write_text(probe, encoding="utf-8")
        dom = _run([f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                    copy.resolve().as_uri()], timeout)  # fmt: skip
    found = re.search(r'<pre id="scoresde-probe">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError("the page's load event never ran the probe (chromium --dump-dom output "
                           f"ends: {dom[-300:]!r})")
    return json.loads(html.unescape(found.group(1)))


def problems(result: dict) -> list[str]:
    """What is wrong with a checked page: images not loaded, horizontal overflow."""
    out = [f"image {i['id']!r} did not load (naturalWidth 0)" for i in result["images"]
           if not i["complete"] or i["width"] <= 0]  # fmt: skip
    if result["scrollWidth"] > result["viewport"]:
        out.append(f"page is {result['scrollWidth']} px wide in a {result['viewport']} px viewport; "
                   f"sticking out: {result['overflowing']}")
    return out


def screenshot(page: str | os.PathLike, png: str | os.PathLike, width: int = 1280,
               height: int = 1800, timeout: float = 120) -> Path:
    """A PNG of the top ``height`` pixels of the page at ``width`` pixels."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={width},{height}", "--virtual-time-budget=10000",
          f"--screenshot={png}", Path(page).resolve().as_uri()], timeout)  # fmt: skip
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="check report.html in headless chromium; screenshot")
    p.add_argument("page", help="the report (reports/report.html)")
    p.add_argument("--screenshot", help="write a PNG of the top of the page here")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1800)
    args = p.parse_args(argv)
    if not Path(args.page).is_file():
        print(f"{args.page} does not exist: run the pipeline first (snakemake --cores all)",
              file=sys.stderr)  # fmt: skip
        return 2
    result = check_page(args.page, args.width)
    bad = problems(result)
    print(f"{len(result['images'])} images, page {result['scrollWidth']} px wide in "
          f"{result['viewport']} px" + ("".join(f"\nPROBLEM: {b}" for b in bad)))
    if args.screenshot:
        print(f"screenshot -> {screenshot(args.page, args.screenshot, args.width, args.height)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
