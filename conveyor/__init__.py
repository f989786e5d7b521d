"""Conveyor: self-hosted release orchestration."""

__version__ = "0.1.0"
