"""A look inside the embeddings of a feature set: duplicates, train/test leaks, likely label errors
and a 2-D map, each logged as an `inspect` run."""
