"""DAG versions: the pure map model, its Redis layout, and the per-process service."""
