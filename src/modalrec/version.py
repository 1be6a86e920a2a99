"""The version of modalrec that is running (recorded in results and printed by ``modalrec --version``)."""

from __future__ import annotations


def package_version() -> str:
    """The installed distribution's version; the source tree's ``__version__`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modalrec")
    except PackageNotFoundError:
        from modalrec import __version__

        return __version__
