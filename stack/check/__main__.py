import sys

from stack.check import main

sys.exit(main())
