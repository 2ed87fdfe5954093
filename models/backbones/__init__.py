"""Backbone feature extractors shared by several models."""
