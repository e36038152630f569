"""Adapters for RAG frameworks; each imports its framework only when used."""
