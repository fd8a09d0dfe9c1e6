"""WSGI entry point: ``gunicorn docnum.api.wsgi:app``."""
from docnum.api.app import create_app

app = create_app()
