"""Hostile inputs against the documented bounds on memory and time (docs/security.md, "Bounds")."""
