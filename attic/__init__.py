"""Attic: log everything on an MQTT broker (and Modbus meters) into time-rotated SQLite files.

Reading the logs back: ``attic.files(root)``, ``attic.rows(root, stream=...)`` (plain tuples) and
``attic.read(root, stream=...)`` (a pandas DataFrame; pandas is imported only when it is called).
"""

__version__ = "0.1.0"

# Imported here rather than lazily through __getattr__: the first import of the submodule
# ``attic.read`` would otherwise bind the module over the function ``attic.read``. These modules
# need only the standard library.
from attic.read import files, read, rows  # noqa: E402

__all__ = ["__version__", "files", "read", "rows"]
