"""Stored workflows: definitions with typed parameters (pure), the directory loaded at start-up, and resolving a
task queued by workflow name into the prompt it runs."""
