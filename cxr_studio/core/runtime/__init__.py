"""Threads and state: device, worker, model manager, events, the Session."""
