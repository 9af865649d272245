"""`python -m lape_harness ...` (also what `torchrun -m lape_harness profile ...` runs)."""

from lape_harness.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
