"""`python -m hgdeploy` is the `hgdeploy` command."""

from hgdeploy.cli import main

main()
