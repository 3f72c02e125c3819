"""Take a screenshot of a page in headless Chromium (the picture of a run in the README):

python -m tests.reports.screenshot runs/NAME/report.html docs/report.png [WIDTH HEIGHT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from .browser import Browser, find_chromium


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    chromium = find_chromium()
    if chromium is None:
        print("error: chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    width, height = (int(argv[2]), int(argv[3])) if len(argv) == 4 else (1100, 900)
    with Browser(chromium, width, height) as browser:
        browser.open(Path(argv[0]))
        problems = browser.problems()
        browser.screenshot(Path(argv[1]))
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
