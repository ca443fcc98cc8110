"""``renew-daemon``: the long-running watcher (scheduler jobs, state, alert policy,
metrics, sd_notify).
"""
