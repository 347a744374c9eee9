"""The local stack: everything that starts Prefect, workers or a mail capture, or runs the flows in-process."""
