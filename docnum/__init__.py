"""docnum: unique, provable document numbers for construction document control.

The installed package is ``docnum``; its parts live in the repository's top-level folders,
mapped by ``package-dir`` in ``pyproject.toml``:

- ``docnum.shared`` (``shared/``): the domain: settings, models, templates, allocation, audit.
- ``docnum.api`` (``api/``): the Flask front door and the admin console.
- ``docnum.workers`` (``workers/``): the Celery app, shard consumers and maintenance jobs.
- ``docnum.cli`` (``cli/``): the ``docnum`` command.
"""

__version__ = "0.1.0"
