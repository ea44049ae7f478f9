"""Training-step time and peak memory (paper Table 6): the same program as ``taylorat bench``.

    python benchmarks/step_time.py --device cpu --quick --max-overhead 1.05
    python benchmarks/step_time.py --device cuda --models preact_resnet18,wrn_34_10 --precision bf16 --channels-last
"""

import sys

from taylorat.bench.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/step_time.py"))
