"""FastAPI adapter: validates requests, reads the job store, enqueues through ``dispatch``."""
