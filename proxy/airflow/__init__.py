"""Airflow-specific knowledge: the metadata DB schema and (later) the route tables per major version."""
