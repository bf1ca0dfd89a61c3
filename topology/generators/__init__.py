"""Generators for common GPU cluster fabrics (fat-tree, rail-optimized, dual-plane)."""
