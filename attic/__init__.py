"""Attic: log everything on an MQTT broker (and Modbus meters) into time-rotated SQLite files."""

__version__ = "0.1.0"
