"""Content features and ready-made datasets: sentence-transformers text features, MovieLens 100K preparation."""
