"""`python -m stack.course`: see stack.course.run."""
import sys

from stack.course.run import main

sys.exit(main())
