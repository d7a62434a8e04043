"""`python -m optimizer.history ...`: the review CLI (the same as `python -m optimizer review`)."""

import sys

from .cli import review_command

raise SystemExit(review_command(sys.argv[1:]))
