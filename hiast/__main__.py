import sys

from hiast.cli import main

sys.exit(main())
