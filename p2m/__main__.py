"""`python -m p2m` (and `torchrun -m p2m`) runs the CLI."""

from p2m.cli import main

if __name__ == "__main__":
    main()
