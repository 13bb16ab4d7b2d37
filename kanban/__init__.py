"""kanban: run a team of coding agents over a git repository, steered by markdown."""

__version__ = "0.1.0"
