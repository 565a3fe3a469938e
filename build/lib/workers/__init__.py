"""Celery adapter over the ``agenticore`` library: thin tasks that pass job ids."""
