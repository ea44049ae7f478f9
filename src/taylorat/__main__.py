"""``python -m taylorat`` = the ``taylorat`` command."""

import sys

from .cli import main

sys.exit(main())
