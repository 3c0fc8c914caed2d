"""`python -m glad ...` (and `torchrun -m glad ...`) runs the `glad` command line."""

from glad_cli.main import main

if __name__ == "__main__":
    main()
