"""Prediction quality per rollout step; the same as `avg-rt bench quality` (see its --help).

python benchmarks/quality.py            # quick mode, minutes on a CPU
python benchmarks/quality.py --full     # 10 held-out episodes, 64 steps, up to 100 clips
"""

import sys

from avg_rt.cli import app  # the root: a user error is one line, not a traceback

if __name__ == "__main__":
    app(["bench", "quality", *sys.argv[1:]])
