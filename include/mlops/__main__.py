import sys

from include.mlops.cli import main

sys.exit(main())
