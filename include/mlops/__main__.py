"""Lets ``python -m include.mlops <command>`` run the CLI and exit with its status code."""

import sys

from include.mlops.cli import main

sys.exit(main())
