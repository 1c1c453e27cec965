"""URL prioritization for check-in: pure rules plus an in-memory snapshot of the inputs."""
