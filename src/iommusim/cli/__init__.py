"""Command-line interface: thin over the library."""
