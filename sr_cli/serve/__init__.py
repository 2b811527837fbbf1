"""A warm worker for shell loops: ``srx serve`` keeps models loaded; ``srx upscale`` hands it its job.

The worker listens on a per-user Unix socket (never a network address) and speaks newline-delimited JSON:
the client sends one request, the worker streams events (planned, start, tile, done) and a final report.
"""
