"""Devices and shardings: the one mesh builder, logical-axis rule sets, multi-host start-up."""
