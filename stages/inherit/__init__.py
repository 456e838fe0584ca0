"""The inherit stage: a new job continues an earlier job's files (`resume_from`)."""
