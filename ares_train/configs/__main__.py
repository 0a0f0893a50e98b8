"""`python -m ares_train.configs NAME`: print the path of a shipped accelerate config."""

import sys

from . import config_path

print(config_path(sys.argv[1] if len(sys.argv) > 1 else "deepspeed_zero2"))
