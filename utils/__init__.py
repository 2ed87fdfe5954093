"""Shared helpers: metrics, schedules, export, timing, visualisation and CLI plumbing."""
