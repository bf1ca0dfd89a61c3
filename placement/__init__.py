"""Placement of parallel ranks on the topology. Pure functions; imports only ``topology``."""
