"""``python -m s3ray <stage> [--config P] [k=v ...]``: the ``s3ray`` command, for places where only a Python
interpreter is named, above all a Ray job's entrypoint:

    ray job submit --working-dir . -- python -m s3ray train --config demo_cpu
"""

import sys

from s3ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
