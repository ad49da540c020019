"""algocyte-agent: the software inside a point-of-care white-cell differential analyzer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("algocyte-agent")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
