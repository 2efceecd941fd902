"""Command-line interface: ``anydepth <command>``. Only this package talks to the user."""
