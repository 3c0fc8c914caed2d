"""`glad bench train` and `glad bench eval`: end-to-end costs (subcommands of `glad bench`)."""

from glad_cli.bench import bench  # noqa: F401  (the group these commands join)
