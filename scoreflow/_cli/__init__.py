"""The `scoreflow` command (edge: maps strings to objects in one table)."""
