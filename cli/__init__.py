"""The `glad` command line (installed as the `glad_cli` package)."""
