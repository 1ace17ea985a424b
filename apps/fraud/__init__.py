"""Fraud app: real-time card-transaction fraud scoring with delayed labels (see README.md)."""
