"""Line charts drawn with characters, for loss curves in the terminal."""

from __future__ import annotations

from itertools import pairwise

from rich.text import Text

COLORS = ["cyan", "magenta", "green", "yellow", "blue", "red"]
MARKS = ["•", "◆", "▲", "■", "×", "+"]


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    width: int = 64,
    height: int = 14,
    y_label: str = "loss",
    x_label: str = "step",
) -> Text:
    """Each series is [(x, y), ...]; points are joined by vertical strokes between columns."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return Text("(no evals yet)")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]

    def cell(x: float, y: float) -> tuple[int, int]:
        col = round((x - x0) / ((x1 - x0) or 1) * (width - 1))
        row = round((y1 - y) / (y1 - y0) * (height - 1))
        return row, col

    for i, pts in enumerate(series.values()):
        mark, color = MARKS[i % len(MARKS)], COLORS[i % len(COLORS)]
        cells = [cell(x, y) for x, y in sorted(pts)]
        for (r0, c0), (r1, c1) in pairwise(cells):  # connect consecutive points
            for c in range(c0, c1 + 1):
                t = (c - c0) / ((c1 - c0) or 1)
                r = round(r0 + (r1 - r0) * t)
                if grid[r][c] is None:
                    grid[r][c] = ("·", color)
        for r, c in cells:
            grid[r][c] = (mark, color)

    text = Text()
    for r, row in enumerate(grid):
        y = y1 - (y1 - y0) * r / (height - 1)
        text.append(f"{y:7.3f} │" if r % 3 == 0 or r == height - 1 else "        │", style="dim")
        for c in row:
            text.append(*(c or (" ", "")))
        text.append("\n")
    text.append("        └" + "─" * width + "\n", style="dim")
    text.append(f"         {x0:<10g}{x_label:^{width - 20}}{x1:>10g}\n", style="dim")
    legend = "   ".join(f"{MARKS[i % 6]} {n}" for i, n in enumerate(series))
    text.append(f"         {legend}   ({y_label})", style="dim")
    for i, name in enumerate(series):
        text.highlight_words([f"{MARKS[i % 6]} {name}"], style=COLORS[i % len(COLORS)])
    return text
