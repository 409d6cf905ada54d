"""How live explore.py feels: the time from a drag on the rendering to the new image on the page.

    python benchmarks/explore_latency.py --checkpoint assets/gqn-sm5.pt             # 30 drags
    python benchmarks/explore_latency.py --checkpoint CKPT --samples 8           # the page's "mean of 8"
    python benchmarks/explore_latency.py --checkpoint CKPT --screenshot assets/explorer.png

Starts explore.py on a free port (a process of its own, as a user runs it), opens the page in headless
Chromium (Debian's package, driven by Playwright: pip install playwright; apt install chromium), waits for the
first image, then drags the rendering --drags times, 12 px each, waiting for each new image. The page itself
records, for each image, the milliseconds from the input event to the image being shown
(window.gqn.latencies), and the server the model's own time (X-Render-Ms). Prints the median and the 90th
percentile. Nothing is asserted.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

EXPLORE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "explore.py")

DEBIAN_CHROMIUM = "/usr/bin/chromium"      # Debian's package, which .ci/run installs
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium():
    """The Chromium this script and the explorer's browser test start: Debian's, else the first `chromium` on
    PATH; None where there is neither."""
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium")


def start_server(checkpoint, data_dir=None, device=None):
    """explore.py on a free port of 127.0.0.1: (its process, the address it prints)."""
    cmd = [sys.executable, EXPLORE, "--checkpoint", checkpoint, "--port", "0"] + \
        (["--data_dir", data_dir] if data_dir else []) + (["--device", device] if device else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in server.stdout:
        found = re.search(r"http://\S+/", line)
        if found:
            return server, found.group(0)
    server.wait()
    sys.exit(f"error: explore.py ended without serving (exit status {server.returncode})")


def open_page(playwright, url):
    chromium = find_chromium()
    if chromium is None:
        sys.exit(f"error: no Chromium at {DEBIAN_CHROMIUM} or on PATH (Debian: apt-get install chromium)")
    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(url)
    page.wait_for_function("window.gqn && window.gqn.renders >= 1", timeout=60_000)
    return browser, page


def drag_once(page, box, dx):
    """Drag the rendering by dx pixels and wait for the image that follows."""
    before = page.evaluate("window.gqn.renders")
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dx / 3)
    page.mouse.up()
    page.wait_for_function(f"window.gqn.renders > {before}", timeout=30_000)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--drags", type=int, default=30)
    p.add_argument("--samples", type=int, default=1,
                   help="render the mean of this many samples (the page's 'mean of N')")
    p.add_argument("--screenshot", default=None,
                   help="also write a PNG of the page as it opens (camera at the query view)")
    args = p.parse_args(argv)
    if args.drags < 1 or not 1 <= args.samples <= 32:
        p.exit(2, f"error: --drags must be at least 1 and --samples from 1 to 32 (the page's most), not "
                  f"{args.drags} and {args.samples}\n")
    from playwright.sync_api import sync_playwright
    server, url = start_server(args.checkpoint, args.data_dir)
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, url)
        if args.screenshot:
            page.screenshot(path=args.screenshot)
            print(f"wrote {args.screenshot}")
        if args.samples > 1:
            page.fill("#samples", str(args.samples))
            page.check("#mean")
        box = page.locator("#render").bounding_box()
        drag_once(page, box, 12)                              # warm-up
        start = page.evaluate("window.gqn.latencies.length")
        for k in range(args.drags):
            drag_once(page, box, 12 if k % 2 == 0 else -8)
        latencies = page.evaluate("window.gqn.latencies")[start:]
        browser.close()
    server.terminate()
    server.wait()
    latencies.sort()
    p90 = latencies[int(0.9 * (len(latencies) - 1))]
    what = f"mean of {args.samples} samples" if args.samples > 1 else "one sample"
    print(f"{args.checkpoint} ({what}): drag to new image, {len(latencies)} drags: median "
          f"{statistics.median(latencies):.0f} ms, 90th percentile {p90:.0f} ms ")


if __name__ == "__main__":
    main()
