"""The weights stage (MODEL_DOWNLOAD): a base model made ready once per volume."""
