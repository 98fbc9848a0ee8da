import sys

from toneserve.cli import main

sys.exit(main())
