"""`python -m datagen ...`: the same as the `datagen` command."""

from datagen.cli import main

main()
