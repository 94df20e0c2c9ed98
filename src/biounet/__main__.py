"""``python -m biounet`` (and ``torchrun -m biounet train ...``): the command line."""

import sys

from biounet.cli.main import main

sys.exit(main())
