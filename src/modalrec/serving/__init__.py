"""Serving a trained run: embedding export, an HTTP recommendation service and optional ANN search.

``modalrec.serving.app.create_app`` needs the optional extra ``serve`` (FastAPI + uvicorn); export needs only
numpy (pyarrow for parquet).
"""
