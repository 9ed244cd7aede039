"""Speed per backend; the same as `avg-rt bench speed` (see its --help).

python benchmarks/speed.py                       # quick mode, small preset, CPU
python benchmarks/speed.py --full --device cuda  # paper preset, up to 1080x1920
"""

import sys

from avg_rt.cli import app  # the root: a user error is one line, not a traceback

if __name__ == "__main__":
    app(["bench", "speed", *sys.argv[1:]])
