"""Speed per backend; the same as `avg-rt bench speed` (see its --help).

python benchmarks/speed.py                       # quick mode, small preset, CPU
python benchmarks/speed.py --full --device cuda  # paper preset, up to 1080x1920
"""

import sys

from avg_rt.cli.bench import app

if __name__ == "__main__":
    app(["speed", *sys.argv[1:]])
