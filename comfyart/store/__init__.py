"""Everything that speaks Redis: task records and the queue, workflows, the pool's settings, API keys, quotas.
No other package imports redis."""
