"""The scheduler process: leadership, submissions, lost leases, retries, retention, cron."""
