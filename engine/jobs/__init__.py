"""Jobs: requests accepted by the API, stored, queued, run by a worker, kept for an hour."""
