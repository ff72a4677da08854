"""A third-party adapterkit method, found through the `adapterkit` entry points like the built-in ones."""
from adapterkit import hookimpl


@hookimpl
def register_methods(register):
    from .method import Scale

    register(Scale())
