"""`python -m featstore_cli` runs the `featstore` command."""

from featstore_cli.app import main

main()
