"""`python -m a4g.cli ...`, the form multi-process launchers use (`torchrun -m a4g.cli train ...`)."""

from a4g.cli import main

main()
