"""`python -m curate`: the same as the `curate` command (and `python -m curate.cli`)."""

from curate.cli import main

main()
