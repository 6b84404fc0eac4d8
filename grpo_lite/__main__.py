"""``python -m grpo_lite {demo,train,eval} --help``."""

import sys

from grpo_lite.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
