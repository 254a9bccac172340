"""The version of clipcls, importable without loading the package's public facade."""

__version__ = "0.1.0"
