"""ASGI application for uvicorn: ``python -m uvicorn innercontext.main:app``.

Importing this module reads the settings (DATABASE_URL is required); use
``innercontext.app.create_app`` to build an application with other settings.
"""

from innercontext.app import create_app
from innercontext.config import configure_logging

configure_logging()
app = create_app()
