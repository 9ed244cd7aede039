"""`python -m avg_rt ...` (and `torchrun --nproc-per-node=N -m avg_rt train ...`)."""

from avg_rt.cli import main

main()
