"""Deterministic orchestration only: no boto3, darts, pandas or forecasting imports here."""
