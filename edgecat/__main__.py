"""`python -m edgecat` runs the CLI."""

from edgecat.cli import main

main()
