"""Probe collection apart from materialization: the collector runs each hour's planned probe steps on the
campaign clock and records every step as it ends (`recorded_steps`); the hourly assets only read what
was recorded."""
