"""Reliability and security guarantees of alertd, proven under faults, load and hostile input.

Each module proves one guarantee of docs/RELIABILITY.md against a real alertd on 127.0.0.1.
"""
