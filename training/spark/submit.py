"""spark-submit's entry point for the Spark engine (docs/training.md "Training on Spark"):

    spark-submit [spark options] training/spark/submit.py --data DIR --models DIR [train flags]

is `python -m training train --engine spark ...` in the driver spark-submit starts: the
session then takes spark-submit's master, memory, partitions and checkpoint directory.
"""

from __future__ import annotations

import sys

from training.__main__ import main

if __name__ == "__main__":
    main(["train", "--engine", "spark", *sys.argv[1:]])
