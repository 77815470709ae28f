"""The ``sftune`` command."""
