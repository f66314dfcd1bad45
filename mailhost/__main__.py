import sys

from mailhost.cli import main

sys.exit(main())
