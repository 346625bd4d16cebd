"""Sentence encoders for erckit."""
