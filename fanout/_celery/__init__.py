"""fanout's Celery adapter: tasks, signals, publishing, the event router, the timer
loop, beat's cron schedule, flow control's runtime side, logging and tracing.
"""
