"""One module per stage of a job (dataset, captions, weights, training, publish)."""
