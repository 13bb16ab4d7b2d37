"""kanban: run a team of coding agents over a git repository, steered by markdown."""

__version__ = "0.1.0"

# The name on PyPI ("kanban" is someone else's); the command and the package stay `kanban`.
DISTRIBUTION = "kanban-agents"


def version() -> str:
    """The installed distribution's version, else (running from a source tree) __version__."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return __version__
