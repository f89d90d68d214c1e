"""How long the shapes of generated clips last: the share of each clip's pixels that differ from its background.

Usage: python scripts/bench/sample_persistence.py FOLDER [FOLDER ...]

Each FOLDER holds the 17 grid frames that `nbp-cli sample --num-samples 16 --out FOLDER` (or
`nbp-cli dataset moving-shapes --count 128 --out FOLDER` for real clips) writes: frame_000.png … frame_016.png,
each a grid of clips separated by white lines. For every clip and frame, a pixel is foreground when one of its
channels differs from the clip-frame's median colour by more than 0.2 (of 1). The script prints the mean
foreground share over frames 0–4, 6–10 and 12–16, and how many clips have less than 0.2 % foreground in their
last three frames (their shapes have faded into the background). Needs ffmpeg and numpy.
"""
import subprocess
import sys

import numpy as np

THRESHOLD = 0.2


def load(path):
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height", "-of", "csv=p=0", path], capture_output=True, text=True, check=True)
    w, h = (int(v) for v in probe.stdout.strip().split(","))
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(np.float32) / 255


def spans(white):
    """Runs of non-separator rows (or columns) longer than 20 pixels: the tiles."""
    out, start = [], None
    for i, w in enumerate(white):
        if not w and start is None:
            start = i
        if w and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(white)))
    return [s for s in out if s[1] - s[0] > 20]


def foreground(folder):
    frames = [load(f"{folder}/frame_{t:03d}.png") for t in range(17)]
    first = frames[0]
    is_white = first.min(axis=2) > 0.99
    shares = []
    for r0, r1 in spans(is_white.all(axis=1)):
        for c0, c1 in spans(is_white.all(axis=0)):
            if first[r0:r1, c0:c1].mean() > 0.97:  # an empty cell at the end of the grid
                continue
            row = []
            for f in frames:
                tile = f[r0:r1, c0:c1]
                median = np.median(tile.reshape(-1, 3), axis=0)
                row.append((np.abs(tile - median).max(axis=2) > THRESHOLD).mean())
            shares.append(row)
    return np.array(shares)


for folder in sys.argv[1:]:
    a = foreground(folder)
    faded = (a[:, 14:].mean(axis=1) < 0.002).sum()
    print(f"{folder}: {len(a)} clips; foreground share frames 0-4 {a[:, :5].mean():.3f}, 6-10 {a[:, 6:11].mean():.3f}, "
          f"12-16 {a[:, 12:].mean():.3f}; faded by the last 3 frames: {faded} ({100 * faded / len(a):.0f} %)")
