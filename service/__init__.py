"""diachiso web service: FastAPI app, PostGIS models, CLI."""
