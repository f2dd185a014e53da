"""Face crops shipped with maskrt (see README.md here): the demo's default input and the
smallest real data `check` and `bench` fall back to."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
