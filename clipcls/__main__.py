"""`python -m clipcls` runs the command line."""

from clipcls.cli import main

main()
