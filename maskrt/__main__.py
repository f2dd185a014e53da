import sys

from maskrt.cli import main

sys.exit(main())
