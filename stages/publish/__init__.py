"""The publish stage (UPLOADING): Hugging Face, S3, a folder or a temporary file host."""
