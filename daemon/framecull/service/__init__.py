"""The daemon runtime, a module per concern: notify (sd_notify, watchdog), logs (journald, rate
limits), feeder (the source in a thread), status (status.json, metrics), loop (the service loop
and reload)."""
