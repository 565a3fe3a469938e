"""Agenticore: run AI coding agents as supervised background jobs.

The library is framework-free: Celery lives in ``workers/`` and FastAPI in ``api/``.
"""

__version__ = "0.1.0"
