"""`python -m voxline`: the same CLI as the `voxline` console script."""

from voxline.cli import main

main()
