"""The ``qgseg`` command line (``qgseg.cli.main:main``)."""
